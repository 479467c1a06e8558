"""Molecule-level substructure prediction from the pooled 2D-encoder output: the ``fingerprint`` term of the
MMSA pretraining objective (our addition, ``docs/method.md`` §2.8; targets from ``mmsa_hf.data.fingerprints``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MMSAFingerprintHead(nn.Module):
    r"""Predicts which folded Morgan (ECFP) bits each molecule sets, from the pooled GIN output.

    .. math::  \mathbf{s}_m = \mathrm{MLP}(\mathbf{g}_m) \in \mathbb{R}^{B_{fp}}, \qquad
               p_{m,b} = \sigma(s_{m,b})

    where :math:`\mathbf{g}_m` is the pooled 2D-encoder output (the vector fine-tuning reads) and
    :math:`B_{fp}` is ``config.num_fingerprint_bits``.

    Shapes: ``[B, graph_hidden_size]`` -> logits ``[B, num_fingerprint_bits]`` (``[B, num_outputs]`` when given:
    the same MLP serves the assay head).
    """

    def __init__(self, config, num_outputs: int | None = None):
        super().__init__()
        hidden = config.graph_hidden_size
        width = config.num_fingerprint_bits if num_outputs is None else num_outputs
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, graph_pooled_output: torch.Tensor) -> torch.Tensor:
        return self.mlp(graph_pooled_output).float()


def fingerprint_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""Binary cross-entropy over the observed bits,
    :math:`-\frac{1}{|\Omega|}\sum_{(m,b)\in\Omega} y_{m,b}\log p_{m,b} + (1-y_{m,b})\log(1-p_{m,b})`, with
    :math:`\Omega` the non-NaN entries of ``targets`` ``[B, num_bits]`` (0 when there are none)."""
    observed = torch.isfinite(targets)
    if not bool(observed.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits.float()[observed], targets.float()[observed])
