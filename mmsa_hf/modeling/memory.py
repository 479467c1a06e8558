"""Memory bank of K L2-normalised anchors ("typical molecular representations")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gather_across_processes(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` ([n_r, D], n_r may differ per rank) over all processes of the default
    ``torch.distributed`` group, in rank order. A no-op unless distributed is initialised with >1 process.
    Not differentiable (used for the EMA update only)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return x
    world_size = torch.distributed.get_world_size()
    if world_size == 1:
        return x
    size = torch.tensor([x.size(0)], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    torch.distributed.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.size(0)] = x
    gathered = [torch.zeros_like(padded) for _ in range(world_size)]
    torch.distributed.all_gather(gathered, padded.contiguous())
    return torch.cat([g[:n] for g, n in zip(gathered, sizes)], dim=0)


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    r"""Balanced soft assignment targets (SwAV's Sinkhorn-Knopp), computed without gradient.

    :math:`\mathbf{Q} = \exp(\mathbf{S}/\epsilon)`, then ``iterations`` times: normalise each anchor column to
    total mass :math:`1/K`, each molecule row to :math:`1/n`; rows are returned summing to 1. With
    ``iterations == 0`` this is the sharpened softmax :math:`\mathrm{softmax}(\mathbf{S}/\epsilon)`.

    Args:
        scores: ``[n, K]`` cosine similarities. Returns ``[n, K]`` float32.
    """
    scores = scores.detach().float()
    if iterations == 0 or scores.size(0) == 0:
        return torch.softmax(scores / epsilon, dim=-1)
    q = torch.exp((scores - scores.max()) / epsilon).t()  # [K, n], stabilised
    num_anchors, num_rows = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True).clamp_min(1e-12) / num_anchors
        q = q / q.sum(dim=0, keepdim=True).clamp_min(1e-12) / num_rows
    q = q * num_rows
    return q.t()


class MMSAMemoryBank(nn.Module):
    r"""Memory bank :math:`\mathbf{M} \in \mathbb{R}^{K \times D}` of L2-normalised anchors.

    Soft assignment and read-out of an embedding :math:`\mathbf{z}` (normalised to :math:`\hat{\mathbf{z}}`):

    .. math::
        \mathbf{p} = \mathrm{softmax}(\hat{\mathbf{z}} \hat{\mathbf{M}}^\top / \tau_m), \qquad
        \mathbf{m} = \mathbf{p} \hat{\mathbf{M}}

    Update rules (``memory_update_rule``):

    - ``"ema"``: ``anchors`` is a parameter with ``requires_grad=False``; after each training step,
      :meth:`ema_update` moves every anchor that is the arg-max assignment of at least one embedding
      (gathered from all processes when ``torch.distributed`` is initialised, so all ranks keep identical
      anchors) toward the mean :math:`\bar{\mathbf{z}}_k` of its assigned embeddings and renormalises:
      :math:`\mathbf{M}_k \leftarrow \mathrm{normalize}(\mu \mathbf{M}_k + (1-\mu)\bar{\mathbf{z}}_k)`.
    - ``"gradient"``: ``anchors`` is trained by back-propagation (normalised on every read).

    The anchors are saved in the checkpoint under ``...memory.anchors`` in both cases.
    """

    def __init__(self, config):
        super().__init__()
        self.num_anchors = config.memory_num_anchors
        self.temperature = float(config.memory_temperature)
        self.update_rule = config.memory_update_rule
        self.momentum = float(config.memory_ema_momentum)
        self.anchors = nn.Parameter(
            torch.zeros(config.memory_num_anchors, config.hidden_size),
            requires_grad=config.memory_update_rule == "gradient",
        )

    def restore_update_rule_flag(self) -> None:
        """Set ``anchors.requires_grad`` from the update rule again. ``from_pretrained`` re-creates every loaded
        parameter as trainable, and an EMA-updated bank must stay out of the optimizer's trainable set."""
        self.anchors.requires_grad_(self.update_rule == "gradient")

    def normalized_anchors(self) -> torch.Tensor:
        """``[K, D]`` unit-norm anchors (a fresh tensor; detached under the EMA rule)."""
        anchors = self.anchors if self.update_rule == "gradient" else self.anchors.detach()
        return F.normalize(anchors, dim=-1)

    def similarities(self, z: torch.Tensor) -> torch.Tensor:
        """Cosine similarities ``[n, K]`` between embeddings ``z`` ``[n, D]`` and the anchors."""
        return F.normalize(z, dim=-1) @ self.normalized_anchors().to(z.dtype).t()

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        """Soft assignment ``p = softmax(cos(z, M) / tau_m)``, ``[n, K]``."""
        return torch.softmax(self.similarities(z) / self.temperature, dim=-1)

    def readout(self, assignments: torch.Tensor) -> torch.Tensor:
        """Memory read-out ``m = p M``, ``[n, D]``."""
        return assignments @ self.normalized_anchors().to(assignments.dtype)

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor) -> int:
        """EMA update from embeddings ``z`` ``[n, D]`` (normalised here; gathered across processes).

        Returns the number of anchors that received at least one embedding (over all processes)."""
        z = gather_across_processes(F.normalize(z.detach().float(), dim=-1))
        if z.numel() == 0:
            return 0
        anchors = F.normalize(self.anchors.detach().float(), dim=-1)
        assignment = (z @ anchors.t()).argmax(dim=-1)
        counts = torch.bincount(assignment, minlength=self.num_anchors)
        sums = torch.zeros_like(anchors).index_add_(0, assignment, z)
        used = counts > 0
        means = sums[used] / counts[used].unsqueeze(-1).to(sums.dtype)
        updated = F.normalize(self.momentum * anchors[used] + (1.0 - self.momentum) * means, dim=-1)
        self.anchors[used] = updated.to(self.anchors.dtype)  # anchors without a molecule stay bit-identical
        return int(used.sum())
