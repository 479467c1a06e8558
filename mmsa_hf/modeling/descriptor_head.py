"""Molecule-level descriptor prediction from the pooled 2D-encoder output: the ``descriptor`` term of the
MMSA pretraining objective (our addition, ``docs/method.md`` §2.9; targets from ``mmsa_hf.data.descriptors``)."""

from __future__ import annotations

import torch
from torch import nn


class MMSADescriptorHead(nn.Module):
    r"""Regresses the normalised RDKit descriptors of each molecule from the pooled GIN output.

    .. math::  \hat{\mathbf{t}}_m = \sigma\big(\mathrm{MLP}(\mathbf{g}_m)\big) \in [0, 1]^{D}

    where :math:`\mathbf{g}_m` is the pooled 2D-encoder output (the vector fine-tuning reads) and the targets
    are empirical-CDF values in ``[0, 1]``.

    Shapes: ``[B, graph_hidden_size]`` -> ``[B, num_descriptors]``.
    """

    def __init__(self, config):
        super().__init__()
        hidden = config.graph_hidden_size
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, config.num_descriptors))

    def forward(self, graph_pooled_output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(graph_pooled_output).float())


def descriptor_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""Mean squared error over the observed targets,
    :math:`\frac{1}{|\Omega|}\sum_{(m,d)\in\Omega} (\hat t_{m,d} - t_{m,d})^2`, with :math:`\Omega` the
    non-NaN entries of ``targets`` ``[B, D]`` (0 when there are none)."""
    observed = torch.isfinite(targets)
    if not bool(observed.any()):
        return predictions.sum() * 0.0
    difference = predictions.float()[observed] - targets.float()[observed]
    return difference.pow(2).mean()
