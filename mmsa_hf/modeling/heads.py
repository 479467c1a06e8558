"""Small MLP heads: view projections, cross-modal reconstruction predictors, the property head."""

from __future__ import annotations

import torch
from torch import nn


class MMSAProjectionHead(nn.Module):
    r"""Projects one view's pooled encoder output to the common width:
    :math:`\mathbf{z}_v = \mathbf{W}_2\,\mathrm{GELU}(\mathbf{W}_1 \mathbf{h}_v + \mathbf{b}_1) + \mathbf{b}_2`.

    Shapes: ``[B, F_v] -> [B, D]``."""

    def __init__(self, in_features: int, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(in_features, hidden_size)
        self.activation = nn.GELU()
        self.out = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.activation(self.dense(x)))


class MMSAReconstructionHead(nn.Module):
    r"""Predicts one view's embedding from the others:
    :math:`\hat{\mathbf{z}}_v = \mathrm{MLP}_v\big(\mathrm{mean}_{w \ne v,\, w \text{ present}} \mathbf{z}_w\big)`.

    Shapes: ``[n, D] -> [n, D]``."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.activation = nn.GELU()
        self.out = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.activation(self.norm(self.dense(x))))


class MMSAPropertyHead(nn.Module):
    r"""Property head: ``Dropout -> Linear`` (``classifier_hidden_size`` None, the GraphMVP protocol) or
    ``Dropout -> Linear -> GELU -> Dropout -> Linear``.

    Shapes: ``[B, F] -> [B, num_labels]``."""

    def __init__(self, in_features: int, num_labels: int, dropout: float, hidden_size: int | None = None):
        super().__init__()
        if hidden_size is None:
            self.layers = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_labels))
        else:
            self.layers = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(in_features, hidden_size),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_size, num_labels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
