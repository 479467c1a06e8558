"""Structure awareness: a hypergraph between the molecules of a batch and the memory anchors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import HypergraphConv


def knn_hyperedges(embeddings: torch.Tensor, present: torch.Tensor, k: int) -> torch.Tensor:
    r"""One hyperedge per present molecule: the molecule plus its ``k`` nearest present molecules (cosine).

    ``k`` is clipped to ``n_present - 1``; a molecule alone in its view gets the singleton hyperedge ``{i}``.
    Neighbour search runs without gradient.

    Args:
        embeddings: ``[n, D]``; present: bool ``[n]``.

    Returns:
        long ``[m, 1 + k']`` member lists (row ``r`` = hyperedge of the ``r``-th present molecule, column 0 = the
        molecule itself).
    """
    rows = present.nonzero(as_tuple=True)[0]
    count = rows.numel()
    if count == 0:
        return rows.new_empty(0, 1)
    k_eff = min(int(k), count - 1)
    if k_eff <= 0:
        return rows.unsqueeze(1)
    with torch.no_grad():
        z = F.normalize(embeddings[rows].detach().float(), dim=-1)
        sims = z @ z.t()
        sims.fill_diagonal_(float("-inf"))
        neighbours = sims.topk(k_eff, dim=-1).indices
    return torch.cat([rows.unsqueeze(1), rows[neighbours]], dim=1)


def anchor_hyperedges(anchor_similarities: torch.Tensor, k: int, anchor_offset: int) -> torch.Tensor:
    """One hyperedge per molecule: the molecule plus its ``k`` most similar anchors (node ids offset by
    ``anchor_offset``). ``anchor_similarities`` is ``[n, K]``; returns long ``[n, 1 + k]``."""
    n = anchor_similarities.size(0)
    with torch.no_grad():
        top = anchor_similarities.detach().float().topk(min(int(k), anchor_similarities.size(1)), dim=-1).indices
    own = torch.arange(n, device=anchor_similarities.device).unsqueeze(1)
    return torch.cat([own, top + anchor_offset], dim=1)


def members_to_hyperedge_index(groups: list[torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Turn member lists ``[m_g, s_g]`` into PyG's ``hyperedge_index`` ``[2, nnz]`` (row 0 node ids, row 1
    hyperedge ids, hyperedges numbered consecutively over the groups) and the number of hyperedges."""
    nodes, edges, offset = [], [], 0
    for members in groups:
        if members.numel() == 0:
            continue
        m, s = members.shape
        nodes.append(members.reshape(-1))
        edges.append((torch.arange(m, device=members.device) + offset).repeat_interleave(s))
        offset += m
    if not nodes:
        empty = torch.empty(0, dtype=torch.long)
        return torch.stack([empty, empty]), 0
    return torch.stack([torch.cat(nodes), torch.cat(edges)]), offset


class MMSAHypergraph(nn.Module):
    r"""Hypergraph refinement of the fused molecule embeddings (HGNN, Feng et al. 2019, via PyG
    ``HypergraphConv``).

    **Nodes**: the ``n`` valid molecules of the batch (features: fused embeddings :math:`\mathbf{u}_i`) and, when
    the memory is on, the ``K`` anchors (features: :math:`\mathrm{Lin}_a(\hat{\mathbf{M}}_k)`; they are
    re-injected unchanged at every layer, so only molecule nodes are updated).

    **Hyperedges** (``mode``):

    - ``"batch"`` (training): for every present view :math:`v` and molecule :math:`i`, the hyperedge
      :math:`\{i\} \cup \mathrm{kNN}_v(i)` of its ``hypergraph_k`` nearest molecules in that view's embedding space
      (cosine); plus, with memory, :math:`\{i\} \cup \mathrm{top}_{k_a}(i)`, its ``hypergraph_anchor_k`` nearest
      anchors.
    - ``"anchors"`` (evaluation): only the anchor hyperedges (or the singleton :math:`\{i\}` without memory). A
      molecule's output then depends on itself and the anchors only, never on the rest of its batch.

    **Convolution** (PyG's normalisation, :math:`\mathbf{H}` incidence, :math:`\mathbf{W}` hyperedge weights,
    :math:`\mathbf{D} = \mathrm{diag}(\mathbf{H}\mathbf{w})`, :math:`\mathbf{B} = \mathrm{diag}(\mathbf{1}^\top\mathbf{H})`):

    .. math::
        \mathbf{X}' = \mathbf{D}^{-1} \mathbf{H} \mathbf{W} \mathbf{B}^{-1} \mathbf{H}^\top \mathbf{X} \mathbf{\Theta}
            + \mathbf{b}

    Note: in PyG's implementation ``hyperedge_weight`` enters only the node degree :math:`\mathbf{D}`, not the
    messages; we pass all-ones weights (and ``num_edges`` explicitly), so this is the plain hyperedge-mean /
    node-mean two-stage aggregation. Each of the ``hypergraph_num_layers`` layers is residual:
    :math:`\mathbf{u} \leftarrow \mathrm{LN}(\mathbf{u} + \mathrm{Dropout}(\mathrm{GELU}(\mathrm{HGConv}(\mathbf{u}))))`.

    Shapes: fused ``[n, D]``, view embeddings ``[n, 3, D]``, view mask bool ``[n, 3]``, anchors ``[K, D]`` ->
    refined ``[n, D]``.
    """

    def __init__(self, config):
        super().__init__()
        hidden = config.hidden_size
        self.k = config.hypergraph_k
        self.anchor_k = config.hypergraph_anchor_k
        self.convs = nn.ModuleList(HypergraphConv(hidden, hidden) for _ in range(config.hypergraph_num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(config.hypergraph_num_layers))
        self.anchor_input = nn.Linear(hidden, hidden) if config.use_memory else None
        self.dropout = nn.Dropout(config.hypergraph_dropout)

    def build_hyperedges(
        self,
        fused: torch.Tensor,
        view_embeddings: torch.Tensor | None,
        view_mask: torch.Tensor | None,
        anchor_similarities: torch.Tensor | None,
        mode: str,
    ) -> tuple[torch.Tensor, int]:
        """The ``hyperedge_index`` ``[2, nnz]`` and hyperedge count for ``mode`` ("batch" or "anchors")."""
        n = fused.size(0)
        groups = []
        if mode == "batch" and view_embeddings is not None:
            for v in range(view_embeddings.size(1)):
                groups.append(knn_hyperedges(view_embeddings[:, v], view_mask[:, v], self.k))
        elif mode != "anchors" and mode != "batch":
            raise ValueError(f"unknown hypergraph mode {mode!r}; use 'batch' or 'anchors'")
        if anchor_similarities is not None:
            groups.append(anchor_hyperedges(anchor_similarities, self.anchor_k, anchor_offset=n))
        elif mode == "anchors" or not groups:
            groups.append(torch.arange(n, device=fused.device).unsqueeze(1))
        index, num_edges = members_to_hyperedge_index(groups)
        return index.to(fused.device), num_edges

    def forward(
        self,
        fused: torch.Tensor,
        view_embeddings: torch.Tensor | None = None,
        view_mask: torch.Tensor | None = None,
        anchors: torch.Tensor | None = None,
        anchor_similarities: torch.Tensor | None = None,
        mode: str = "batch",
    ) -> torch.Tensor:
        n = fused.size(0)
        if n == 0:
            return fused
        if anchors is not None and anchor_similarities is None:
            anchor_similarities = F.normalize(fused, dim=-1) @ anchors.to(fused.dtype).t()
        hyperedge_index, num_edges = self.build_hyperedges(
            fused, view_embeddings, view_mask, anchor_similarities if anchors is not None else None, mode
        )
        weights = fused.new_ones(num_edges)
        anchor_nodes = (
            self.anchor_input(anchors.to(fused.dtype)) if (anchors is not None and self.anchor_input is not None) else None
        )
        h = fused
        for conv, norm in zip(self.convs, self.norms):
            x = h if anchor_nodes is None else torch.cat([h, anchor_nodes], dim=0)
            out = conv(x, hyperedge_index, hyperedge_weight=weights, num_edges=num_edges)[:n]
            h = norm(h + self.dropout(F.gelu(out)))
        return h
