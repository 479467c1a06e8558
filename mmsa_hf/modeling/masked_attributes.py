"""Masked atom and bond attribute prediction on the 2D encoder (Hu et al. 2020, "Strategies for pre-training
graph neural networks"), the node-level term of the MMSA pretraining objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sample_masked_atoms(batch: torch.Tensor, num_molecules: int, ratio: float) -> torch.Tensor:
    r"""Choose :math:`k_i = \max(1, \mathrm{round}(r \cdot n_i))` atoms of every molecule uniformly at random.

    Draws from torch's global generator, so the positions follow ``torch.manual_seed`` / accelerate's
    ``set_seed``. ``ratio == 0`` masks nothing.

    Args:
        batch: long ``[N]`` molecule index of every atom (sorted, as in the batch contract).
        num_molecules: ``B``.
        ratio: :math:`r \in [0, 1)`.

    Returns:
        bool ``[N]``, True for masked atoms.
    """
    num_atoms = batch.numel()
    if ratio <= 0 or num_atoms == 0:
        return torch.zeros(num_atoms, dtype=torch.bool, device=batch.device)
    counts = torch.bincount(batch, minlength=num_molecules)
    to_mask = torch.clamp(torch.round(counts.float() * ratio), min=1).long()
    starts = torch.cumsum(counts, 0) - counts
    noise = torch.rand(num_atoms, device=batch.device)
    order = torch.argsort(batch.double() * 2.0 + noise.double())  # by molecule, then by random key
    rank = torch.empty_like(order)
    rank[order] = torch.arange(num_atoms, device=batch.device)
    rank = rank - starts[batch]
    return rank < to_mask[batch]


class MMSAMaskedAttributeHead(nn.Module):
    r"""Predicts the categorical attributes of masked atoms and bonds from the GIN's atom embeddings.

    .. math::
        \hat{\mathbf{y}}^{atom}_i = \mathrm{MLP}_{atom}(\mathbf{h}_i), \qquad
        \hat{\mathbf{y}}^{bond}_{ij} = \mathrm{MLP}_{bond}(\mathbf{h}_i + \mathbf{h}_j)

    where each output is split into one logit block per categorical column (9 atom columns, 3 bond columns).

    Shapes: atom embeddings ``[N, F]`` -> list of ``[N, |V_c|]``; bond endpoint sums ``[E, F]`` -> list of
    ``[E, |V_c|]``.
    """

    def __init__(self, config):
        super().__init__()
        hidden = config.graph_hidden_size
        self.atom_vocab_sizes = list(config.atom_feature_vocab_sizes)
        self.bond_vocab_sizes = list(config.bond_feature_vocab_sizes)
        self.atom_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, sum(self.atom_vocab_sizes)))
        self.bond_mlp = (
            nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, sum(self.bond_vocab_sizes)))
            if config.masked_bond_prediction
            else None
        )

    def atom_logits(self, atom_embeddings: torch.Tensor) -> list[torch.Tensor]:
        return list(self.atom_mlp(atom_embeddings).split(self.atom_vocab_sizes, dim=-1))

    def bond_logits(self, atom_embeddings: torch.Tensor, edge_index: torch.Tensor) -> list[torch.Tensor]:
        pair = atom_embeddings[edge_index[0]] + atom_embeddings[edge_index[1]]
        return list(self.bond_mlp(pair).split(self.bond_vocab_sizes, dim=-1))


def categorical_cross_entropy(logits: list[torch.Tensor], targets: torch.Tensor, vocab_sizes) -> torch.Tensor:
    """Mean over columns of the cross-entropy of ``logits[c]`` ``[M, |V_c|]`` against ``targets[:, c]``
    (indices beyond a vocabulary are clipped to its last entry, as the encoder does)."""
    terms = [
        F.cross_entropy(column_logits.float(), targets[:, c].long().clamp(max=size - 1))
        for c, (column_logits, size) in enumerate(zip(logits, vocab_sizes))
    ]
    return torch.stack(terms).mean()


def masked_attribute_loss(head, atom_embeddings, atom_features, bond_features, edge_index, masked_atoms):
    r""":math:`\mathcal{L}_{mask}` = CE over the 9 atom columns of the masked atoms, plus (when the head predicts
    bonds) CE over the 3 bond columns of the bonds with a masked end. Exactly 0 when nothing is masked.

    Shapes: ``atom_embeddings`` ``[N, F]``, ``atom_features`` ``[N, 9]``, ``bond_features`` ``[E, 3]``,
    ``edge_index`` ``[2, E]``, ``masked_atoms`` bool ``[N]``."""
    if masked_atoms is None or not bool(masked_atoms.any()):
        return torch.zeros((), dtype=torch.float32, device=atom_embeddings.device)
    atoms = masked_atoms.nonzero(as_tuple=True)[0]
    loss = categorical_cross_entropy(head.atom_logits(atom_embeddings[atoms]), atom_features[atoms], head.atom_vocab_sizes)
    if head.bond_mlp is not None and edge_index.numel():
        bonds = (masked_atoms[edge_index[0]] | masked_atoms[edge_index[1]]).nonzero(as_tuple=True)[0]
        if bonds.numel():
            logits = head.bond_logits(atom_embeddings, edge_index[:, bonds])
            loss = loss + categorical_cross_entropy(logits, bond_features[bonds], head.bond_vocab_sizes)
    return loss
