"""E(3) and permutation invariance (``testing_utils.assert_invariant``) and the plain-torch radius graph."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmsa_hf.modeling import MMSAModel, MMSAEncoderOutput
from mmsa_hf.modeling.encoder_geometry import (
    MMSAGeometryEncoder,
    atom_pairs_per_molecule,
    radius_graph_per_molecule,
)
from mmsa_hf.modeling.encoder_graph import MMSAGraphEncoder
from mmsa_hf.modeling.testing_utils import assert_invariant, make_random_batch, transform_batch

from mmsa_modeling_testutils import tiny_config


def test_geometry_encoder_is_e3_and_permutation_invariant():
    batch = make_random_batch(num_molecules=5, num_placeholders=1, seed=4, max_atoms=14)
    encoder = MMSAGeometryEncoder(tiny_config(geometry_cutoff=10.0))
    worst = assert_invariant(encoder, batch, atol=1e-4)
    assert worst < 1e-4


def test_graph_encoder_is_permutation_invariant():
    batch = make_random_batch(num_molecules=5, seed=5)
    assert_invariant(MMSAGraphEncoder(tiny_config(graph_jk="concat")), batch, atol=1e-4)


def test_full_model_is_invariant_in_eval_mode():
    batch = make_random_batch(num_molecules=5, num_placeholders=1, seed=6)
    model = MMSAModel(tiny_config()).train()
    assert_invariant(model, batch, atol=1e-4)
    assert model.training  # mode restored


class _NotInvariant(nn.Module):
    def forward(self, pos, batch, **unused):
        from torch_geometric.nn import global_mean_pool

        return MMSAEncoderOutput(molecule_embedding=global_mean_pool(pos, batch))


def test_assert_invariant_catches_a_coordinate_dependent_module():
    batch = make_random_batch(num_molecules=3, seed=7)
    with pytest.raises(AssertionError, match="molecule_embedding"):
        assert_invariant(_NotInvariant(), batch, atol=1e-4)


def test_transform_batch_permutes_consistently():
    batch = make_random_batch(num_molecules=3, seed=8)
    moved, perm = transform_batch(batch, seed=1)
    assert torch.equal(moved["batch"], batch["batch"])  # atoms stay grouped per molecule
    assert torch.equal(moved["atom_features"], batch["atom_features"][perm])
    # the same bonds (as unordered atom pairs with their features) before and after
    def bonds(b, mapping):
        pairs = mapping[b["edge_index"]].t().tolist()
        return sorted((tuple(p), tuple(f)) for p, f in zip(pairs, b["bond_features"].tolist()))
    assert bonds(moved, perm) == bonds(batch, torch.arange(perm.numel()))
    # distances are preserved
    d0 = torch.cdist(batch["pos"][perm].double(), batch["pos"][perm].double())
    d1 = torch.cdist(moved["pos"].double(), moved["pos"].double())
    assert torch.allclose(d0, d1, atol=1e-4)


def test_radius_graph_matches_brute_force():
    batch = make_random_batch(num_molecules=4, num_placeholders=1, seed=9, max_atoms=12)
    pos, b = batch["pos"], batch["batch"]
    cutoff = 2.5
    edge_index, distance = radius_graph_per_molecule(pos, b, cutoff, ptr=batch["ptr"])
    expected = set()
    for i in range(pos.size(0)):
        for j in range(pos.size(0)):
            if i != j and b[i] == b[j] and (pos[i] - pos[j]).norm() < cutoff:
                expected.add((j, i))
    assert set(map(tuple, edge_index.t().tolist())) == expected
    assert torch.allclose(distance, (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1))
    # without ptr the same graph
    edge_index2, _ = radius_graph_per_molecule(pos, b, cutoff)
    assert torch.equal(edge_index, edge_index2)


def test_radius_graph_is_each_unordered_pair_then_the_same_pair_reversed():
    batch = make_random_batch(num_molecules=4, num_placeholders=1, seed=9, max_atoms=12)
    pos, b = batch["pos"], batch["batch"]
    pairs, pair_distance = atom_pairs_per_molecule(pos, b, 2.5, ptr=batch["ptr"])
    edge_index, distance = radius_graph_per_molecule(pos, b, 2.5, ptr=batch["ptr"])
    q = pairs.size(1)
    assert q > 0 and edge_index.size(1) == 2 * q
    assert (pairs[0] < pairs[1]).all()  # each pair once
    assert torch.equal(edge_index[:, :q], pairs) and torch.equal(edge_index[:, q:], pairs.flip(0))
    assert torch.equal(distance, torch.cat([pair_distance, pair_distance]))
