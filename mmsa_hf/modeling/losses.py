"""Loss functions of MMSA pretraining and property prediction.

All functions work on the *valid* molecules only (placeholder rows removed by the caller) and compute in
float32. ``view_embeddings`` is ``[n, 3, D]`` (graph, image, geometry) with a bool presence mask ``[n, 3]``.
A term with nothing to compare (fewer than two molecules, a single view, ...) is an exact zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .memory import sinkhorn


def _zero(reference: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=torch.float32, device=reference.device)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""Symmetric InfoNCE with in-batch negatives on L2-normalised rows:

    .. math::
        \mathcal{L} = -\frac{1}{2n}\sum_i \left[\log\frac{e^{s_{ii}/\tau}}{\sum_j e^{s_{ij}/\tau}}
            + \log\frac{e^{s_{ii}/\tau}}{\sum_j e^{s_{ji}/\tau}}\right], \qquad
        s_{ij} = \hat{\mathbf{a}}_i^\top \hat{\mathbf{b}}_j

    Returns 0 for fewer than two rows (no negatives)."""
    if a.size(0) < 2:
        return _zero(a)
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = a @ b.t() / temperature
    labels = torch.arange(a.size(0), device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def inter_modal_contrastive_loss(view_embeddings, view_mask, temperature: float) -> torch.Tensor:
    r""":math:`\mathcal{L}_c` = mean over view pairs :math:`(v, w)` of InfoNCE between :math:`\mathbf{z}_v` and
    :math:`\mathbf{z}_w`, over the molecules that have both views (pairs with < 2 such molecules are skipped)."""
    terms = []
    num_views = view_embeddings.size(1)
    for v in range(num_views):
        for w in range(v + 1, num_views):
            both = view_mask[:, v] & view_mask[:, w]
            if int(both.sum()) >= 2:
                terms.append(info_nce(view_embeddings[both, v], view_embeddings[both, w], temperature))
    return torch.stack(terms).mean() if terms else _zero(view_embeddings)


def cross_modal_reconstruction_loss(view_embeddings, view_mask, heads, loss_type: str = "cosine") -> torch.Tensor:
    r""":math:`\mathcal{L}_r` = mean over target views :math:`v` of
    :math:`d\big(\mathrm{MLP}_v(\mathrm{mean}_{w \ne v}\mathbf{z}_w),\ \mathrm{sg}(\mathbf{z}_v)\big)`, over the
    molecules that have view :math:`v` and at least one other view; :math:`d` is :math:`1 - \cos` (``"cosine"``)
    or the mean squared error (``"mse"``). ``heads[v]`` is the predictor of view ``v`` (None when disabled)."""
    terms = []
    mask = view_mask.to(view_embeddings.dtype).unsqueeze(-1)  # [n, 3, 1]
    total = (view_embeddings * mask).sum(dim=1)  # [n, D]
    count = mask.sum(dim=1)  # [n, 1]
    for v, head in enumerate(heads):
        if head is None:
            continue
        others = count.squeeze(-1) - view_mask[:, v].to(count.dtype)
        rows = view_mask[:, v] & (others > 0)
        if not bool(rows.any()):
            continue
        context = (total[rows] - view_embeddings[rows, v]) / others[rows].unsqueeze(-1)
        prediction = head(context).float()
        target = view_embeddings[rows, v].detach().float()
        if loss_type == "cosine":
            terms.append((1.0 - F.cosine_similarity(prediction, target, dim=-1)).mean())
        else:
            terms.append(F.mse_loss(prediction, target))
    return torch.stack(terms).mean() if terms else _zero(view_embeddings)


def hypergraph_consistency_loss(refined, fused, view_embeddings, view_mask, temperature: float, target: str = "fused"):
    r""":math:`\mathcal{L}_h`: InfoNCE between the hypergraph-refined embedding :math:`\tilde{\mathbf{u}}` and the
    fused embedding :math:`\mathbf{u}` (``target="fused"``), or the mean over views of InfoNCE between
    :math:`\tilde{\mathbf{u}}` and :math:`\mathbf{z}_v` (``target="views"``). The refined embedding aggregates
    neighbours and anchors; the loss keeps it identifiable among the batch, which pushes hypergraph neighbours to be
    semantically consistent."""
    if target == "fused":
        return info_nce(refined, fused, temperature)
    terms = []
    for v in range(view_embeddings.size(1)):
        rows = view_mask[:, v]
        if int(rows.sum()) >= 2:
            terms.append(info_nce(refined[rows], view_embeddings[rows, v], temperature))
    return torch.stack(terms).mean() if terms else _zero(refined)


def memory_alignment_loss(
    memory,
    view_embeddings,
    view_mask,
    fused,
    target_temperature: float,
    sinkhorn_iterations: int,
    space: str = "shared",
) -> torch.Tensor:
    r""":math:`\mathcal{L}_m` = swapped prediction + read-out pull.

    Swapped prediction (SwAV-style): for ordered view pairs :math:`(v, w)`, over molecules with both views,

    .. math::
        \mathcal{L}_{swap} = -\,\mathrm{mean}_{(v,w),\,i} \sum_k q^{(w)}_{ik} \log p^{(v)}_{ik}, \quad
        \mathbf{p}^{(v)} = \mathrm{softmax}(\hat{\mathbf{z}}_v\hat{\mathbf{M}}^\top/\tau_m), \quad
        \mathbf{q}^{(w)} = \mathrm{Sinkhorn}(\mathrm{sg}(\hat{\mathbf{z}}_w\hat{\mathbf{M}}^\top)/\epsilon)

    (Sinkhorn over the molecules of view :math:`w` in the batch; plain sharpening when
    ``sinkhorn_iterations == 0``). Read-out pull of the fused embedding toward its memory read-out:
    :math:`\mathcal{L}_{pull} = \mathrm{mean}_i (1 - \cos(\mathbf{u}_i, \mathbf{p}(\mathbf{u}_i)\hat{\mathbf{M}}))`.

    With ``space="shared"`` the fused embedding :math:`\mathbf{u}` takes part in the swapped prediction as a fourth
    member beside the views (the anchors are then updated from the same set, see ``memory_space``); with
    ``space="fused_ema"`` only the views are swapped.
    """
    if space == "shared" and fused.size(0) > 0:
        view_embeddings = torch.cat([view_embeddings, fused.unsqueeze(1).to(view_embeddings.dtype)], dim=1)
        view_mask = torch.cat([view_mask, view_mask.new_ones(fused.size(0), 1)], dim=1)
    num_views = view_embeddings.size(1)
    log_p, q = {}, {}
    for v in range(num_views):
        rows = view_mask[:, v]
        if not bool(rows.any()):
            continue
        sims = memory.similarities(view_embeddings[:, v].float()).float()  # [n, K]; fp32 under autocast
        log_p[v] = torch.log_softmax(sims / memory.temperature, dim=-1)
        targets = torch.zeros_like(sims)
        targets[rows] = sinkhorn(sims[rows], target_temperature, sinkhorn_iterations)
        q[v] = targets
    swap_terms = []
    for v in log_p:
        for w in q:
            if v == w:
                continue
            rows = view_mask[:, v] & view_mask[:, w]
            if bool(rows.any()):
                swap_terms.append(-(q[w][rows] * log_p[v][rows]).sum(dim=-1).mean())
    swap = torch.stack(swap_terms).mean() if swap_terms else _zero(fused)
    if fused.size(0) == 0:
        return swap
    fused = fused.float()
    readout = memory.readout(memory.assign(fused))
    pull = (1.0 - F.cosine_similarity(fused, readout.float(), dim=-1)).mean()
    return swap + pull


def masked_hypergraph_loss(
    hypergraph, fused, view_embeddings, view_mask, anchors, mask_token, ratio, temperature, deterministic=False
):
    r""":math:`\mathcal{L}_h` with ``hypergraph_consistency_target="masked"``: a random set :math:`S` (share
    ``ratio``, at least one molecule) of the batch enters the hypergraph as the mask token :math:`\mathbf{t}`
    instead of its fused embedding; its refined embedding must pick out its own stop-gradient fused embedding
    among all :math:`n` molecules:

    .. math::
        \mathcal{L}_h = -\frac{1}{|S|}\sum_{i \in S}\log
            \frac{e^{\cos(\tilde{\mathbf{u}}_i, \mathrm{sg}(\mathbf{u}_i))/\tau}}
                 {\sum_{j=1}^{n} e^{\cos(\tilde{\mathbf{u}}_i, \mathrm{sg}(\mathbf{u}_j))/\tau}},
        \qquad \tilde{\mathbf{u}} = \mathrm{HGNN}(\mathbf{u}_{S \leftarrow \mathbf{t}})

    The kNN hyperedges come from the (unmasked) view embeddings, so a masked molecule is recovered from its
    hypergraph neighbours only: the residual path carries nothing about it. Shapes: fused ``[n, D]``, view
    embeddings ``[n, 3, D]``, view mask ``[n, 3]``, anchors ``[K, D]`` or None, mask token ``[D]``.
    ``deterministic=True`` (evaluation) masks an evenly spaced ``ratio`` of the rows instead of a random one."""
    n = fused.size(0)
    if n < 2:
        return _zero(fused)
    if deterministic:
        steps = torch.arange(n + 1, device=fused.device, dtype=torch.float64) * ratio
        masked = torch.floor(steps[1:]) > torch.floor(steps[:-1])
    else:
        masked = torch.rand(n, device=fused.device) < ratio
    if not bool(masked.any()):
        masked[0 if deterministic else torch.randint(n, (1,), device=fused.device)] = True
    inputs = torch.where(masked.unsqueeze(-1), mask_token.to(fused.dtype), fused)
    refined = hypergraph(inputs, view_embeddings, view_mask, anchors=anchors, mode="batch")
    queries = F.normalize(refined[masked].float(), dim=-1)
    keys = F.normalize(fused.detach().float(), dim=-1)
    labels = masked.nonzero(as_tuple=True)[0]
    return F.cross_entropy(queries @ keys.t() / temperature, labels)


def masked_bce_with_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the observed (non-NaN) labels; 0 if none is observed."""
    labels = labels.to(torch.float32).view_as(logits)
    observed = ~torch.isnan(labels)
    if not bool(observed.any()):
        return (logits.float() * 0.0).sum()
    return F.binary_cross_entropy_with_logits(logits.float()[observed], labels[observed])


def masked_normalized_mse(logits, labels, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """MSE between ``logits`` and ``(labels - mean) / std`` over the observed (non-NaN) labels."""
    labels = labels.to(torch.float32).view_as(logits)
    observed = ~torch.isnan(labels)
    if not bool(observed.any()):
        return (logits.float() * 0.0).sum()
    target = (labels - mean) / std
    return F.mse_loss(logits.float()[observed], target[observed])


def multiclass_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with integer class labels ``[B]``; label -100 (or NaN) is ignored."""
    labels = labels.view(-1)
    if labels.is_floating_point():
        labels = torch.where(torch.isnan(labels), torch.full_like(labels, -100), labels).long()
    if not bool((labels != -100).any()):
        return (logits.float() * 0.0).sum()
    return F.cross_entropy(logits.float(), labels, ignore_index=-100)
