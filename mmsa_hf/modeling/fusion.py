"""Multi-modal fusion: a small transformer over a learned [FUSE] query and one token per view."""

from __future__ import annotations

import torch
from torch import nn


class MMSAFusionAttention(nn.Module):
    r"""Multi-head self-attention with a key padding mask; returns the attention weights.

    .. math::
        \mathrm{Attn}(\mathbf{X}) = \mathrm{softmax}\!\left(\frac{\mathbf{Q}\mathbf{K}^\top}{\sqrt{d_h}}
            + \mathbf{M}\right)\mathbf{V}, \qquad M_{tu} = -\infty \text{ if token } u \text{ is masked}
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, tokens, hidden = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) / (self.head_dim**0.5)
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)
        context = (self.dropout(weights) @ v).transpose(1, 2).reshape(batch, tokens, hidden)
        return self.out(context), weights


class MMSAFusionLayer(nn.Module):
    r"""Pre-LayerNorm transformer layer:
    :math:`\mathbf{X} \leftarrow \mathbf{X} + \mathrm{Attn}(\mathrm{LN}(\mathbf{X}))`,
    :math:`\mathbf{X} \leftarrow \mathbf{X} + \mathrm{FFN}(\mathrm{LN}(\mathbf{X}))` (GELU FFN)."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.attention = MMSAFusionAttention(hidden_size, num_heads, dropout)
        self.ffn_norm = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, intermediate_size), nn.GELU(), nn.Linear(intermediate_size, hidden_size)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.attention(self.attention_norm(x), key_mask)
        x = x + self.dropout(attended)
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, weights


class MMSAFusion(nn.Module):
    r"""Fuses the per-view embeddings of each molecule into one vector with attention over modality tokens.

    Tokens: a learned query :math:`\mathbf{f}` ([FUSE]) and, per view :math:`v`, its projected embedding plus a
    learned modality-type embedding :math:`\mathbf{z}_v + \mathbf{t}_v`. A view that is missing or disabled for a
    molecule is removed from the keys by the key padding mask (the [FUSE] token is never masked, so a molecule
    with no view still gets a finite output). After ``fusion_num_layers`` pre-LN layers,

    .. math::
        \mathbf{u} = \mathrm{LN}\big(\mathbf{X}^{(L)}_{[FUSE]}\big)

    Shapes:
        - input: ``view_tokens`` ``[B, 3, D]`` (graph, image, geometry; any values where masked),
          ``modality_mask`` bool ``[B, 3]`` (True = present)
        - output: fused ``[B, D]`` and, per layer, attention weights ``[B, heads, 4, 4]``
    """

    def __init__(self, config):
        super().__init__()
        hidden = config.hidden_size
        intermediate = config.fusion_intermediate_size or 2 * hidden
        self.fuse_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.modality_embeddings = nn.Embedding(3, hidden)
        self.layers = nn.ModuleList(
            MMSAFusionLayer(hidden, config.fusion_num_heads, intermediate, config.fusion_dropout)
            for _ in range(config.fusion_num_layers)
        )
        self.final_norm = nn.LayerNorm(hidden)

    def forward(self, view_tokens: torch.Tensor, modality_mask: torch.Tensor, output_attentions: bool = False):
        batch = view_tokens.size(0)
        tokens = view_tokens + self.modality_embeddings.weight.unsqueeze(0)
        x = torch.cat([self.fuse_token.expand(batch, -1, -1).to(tokens.dtype), tokens], dim=1)
        key_mask = torch.cat([modality_mask.new_ones(batch, 1), modality_mask], dim=1)
        attentions = []
        for layer in self.layers:
            x, weights = layer(x, key_mask)
            attentions.append(weights)
        fused = self.final_norm(x[:, 0])
        return fused, (tuple(attentions) if output_attentions else None)


__all__ = ["MMSAFusion"]
