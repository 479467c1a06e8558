"""The pretraining objective terms added for transfer: masked atom/bond attributes, the shared-space memory bank and
the masked hypergraph target."""

from __future__ import annotations

import math

import pytest
import torch

from mmsa_hf.modeling import MMSAConfig, MMSAForPreTraining
from mmsa_hf.modeling.losses import masked_hypergraph_loss, memory_alignment_loss
from mmsa_hf.modeling.masked_attributes import MMSAMaskedAttributeHead, masked_attribute_loss, sample_masked_atoms
from mmsa_hf.modeling.memory import MMSAMemoryBank
from mmsa_hf.modeling.testing_utils import make_random_batch


def _graph_only(**overrides) -> MMSAConfig:
    return MMSAConfig.from_preset("tiny", use_image=False, use_geometry=False, use_memory=False,
                                  use_hypergraph=False, **overrides)


# ---------------------------------------------------------------------------------------------- masked attributes


def test_every_molecule_gets_its_share_of_masked_atoms():
    batch = torch.tensor([0] * 10 + [1] * 3 + [2] * 1)
    masked = sample_masked_atoms(batch, 3, ratio=0.2)
    assert masked.dtype == torch.bool
    per_molecule = torch.bincount(batch[masked], minlength=3).tolist()
    assert per_molecule == [2, 1, 1]  # round(0.2 n), at least one


def test_masked_positions_follow_the_seed():
    batch = torch.repeat_interleave(torch.arange(8), 12)
    torch.manual_seed(3)
    first = sample_masked_atoms(batch, 8, 0.15)
    torch.manual_seed(3)
    again = sample_masked_atoms(batch, 8, 0.15)
    torch.manual_seed(4)
    other = sample_masked_atoms(batch, 8, 0.15)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_masked_attribute_loss_is_zero_when_nothing_is_masked():
    config = _graph_only()
    model = MMSAForPreTraining(config).train()
    batch = make_random_batch(num_molecules=4, seed=1, image_size=32)
    nothing = torch.zeros(batch["atom_features"].size(0), dtype=torch.bool)
    out = model(**batch, masked_atoms=nothing)
    assert float(out.masked_attribute_loss) == 0.0
    some = nothing.clone()
    some[::3] = True
    assert float(model(**batch, masked_atoms=some).masked_attribute_loss) > 0.0


def test_masked_atoms_are_hidden_from_the_graph_encoder():
    config = _graph_only()
    model = MMSAForPreTraining(config).eval()
    batch = make_random_batch(num_molecules=3, seed=2, image_size=32)
    masked = torch.zeros(batch["atom_features"].size(0), dtype=torch.bool)
    masked[0] = True
    changed = dict(batch, atom_features=batch["atom_features"].clone())
    changed["atom_features"][0] = (changed["atom_features"][0] + 1) % 3
    with torch.no_grad():
        a = model.mmsa(**batch, masked_atoms=masked).atom_embeddings
        b = model.mmsa(**changed, masked_atoms=masked).atom_embeddings
        c = model.mmsa(**changed).atom_embeddings
    torch.testing.assert_close(a, b)  # the masked atom's own attributes do not reach the encoder
    assert not torch.allclose(a, c)


def test_masked_attribute_loss_falls_on_a_tiny_corpus():
    torch.manual_seed(0)
    config = _graph_only(masked_atom_ratio=0.3)
    model = MMSAForPreTraining(config).train()
    batch = make_random_batch(num_molecules=16, seed=5, image_size=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        out = model(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(out.masked_attribute_loss))
    assert sum(losses[-10:]) / 10 < 0.75 * sum(losses[:10]) / 10  # random attributes: only partly predictable


def test_bond_prediction_can_be_switched_off():
    config = _graph_only(masked_bond_prediction=False)
    head = MMSAMaskedAttributeHead(config)
    assert head.bond_mlp is None
    embeddings = torch.randn(5, config.graph_hidden_size)
    atom_features = torch.zeros(5, 9, dtype=torch.long)
    bond_features = torch.zeros(2, 3, dtype=torch.long)
    edge_index = torch.tensor([[0, 1], [1, 0]])
    loss = masked_attribute_loss(head, embeddings, atom_features, bond_features, edge_index, torch.tensor([1, 0, 0, 0, 0]).bool())
    assert loss.item() > 0


# -------------------------------------------------------------------------------------------------- memory bank


def test_shared_memory_loss_falls_below_log_k_on_clustered_embeddings():
    torch.manual_seed(0)
    config = MMSAConfig.from_preset("tiny", memory_num_anchors=8, memory_update_rule="ema", memory_ema_momentum=0.9)
    memory = MMSAMemoryBank(config)
    with torch.no_grad():
        memory.anchors.copy_(torch.nn.functional.normalize(torch.randn(8, config.hidden_size), dim=-1))
    centres = torch.nn.functional.normalize(torch.randn(8, config.hidden_size), dim=-1)
    assignment = torch.arange(32) % 8
    first = last = None
    for step in range(40):
        noise = 0.05 * torch.randn(32, 3, config.hidden_size)
        views = centres[assignment].unsqueeze(1) + noise
        fused = centres[assignment] + 0.05 * torch.randn(32, config.hidden_size)
        present = torch.ones(32, 3, dtype=torch.bool)
        loss = memory_alignment_loss(memory, views, present, fused, 0.05, 3, space="shared")
        memory.ema_update(torch.cat([fused, views.reshape(-1, config.hidden_size)]))
        first = float(loss) if first is None else first
        last = float(loss)
    assert last < math.log(8) - 0.5
    assert last < first


def test_memory_space_is_validated_and_round_trips(tmp_path):
    with pytest.raises(ValueError, match="memory_space"):
        MMSAConfig.from_preset("tiny", memory_space="somewhere")
    config = MMSAConfig.from_preset("tiny", memory_space="fused_ema", hypergraph_consistency_target="views",
                                    masked_atom_ratio=0.25, masked_attribute_weight=0.5, masked_bond_prediction=False,
                                    hypergraph_mask_ratio=0.3)
    config.save_pretrained(tmp_path)
    loaded = MMSAConfig.from_pretrained(tmp_path)
    for name in ("memory_space", "hypergraph_consistency_target", "masked_atom_ratio", "masked_attribute_weight",
                 "masked_bond_prediction", "hypergraph_mask_ratio"):
        assert getattr(loaded, name) == getattr(config, name)


# ---------------------------------------------------------------------------------------------- hypergraph term


def test_masked_hypergraph_rows_do_not_see_their_own_embedding():
    config = MMSAConfig.from_preset("tiny", use_memory=False)
    model = MMSAForPreTraining(config).eval()
    hypergraph = model.mmsa.hypergraph
    n, dim = 6, config.hidden_size
    fused = torch.randn(n, dim)
    views = torch.randn(n, 3, dim)
    present = torch.ones(n, 3, dtype=torch.bool)
    token = model.hypergraph_mask_token.detach()
    # deterministic mode with ratio 0.5 masks rows 1, 3, 5
    base = masked_hypergraph_loss(hypergraph, fused, views, present, None, token, 0.5, 0.1, deterministic=True)
    inputs = torch.where(torch.tensor([0, 1, 0, 1, 0, 1]).bool().unsqueeze(-1), token, fused)
    refined = hypergraph(inputs, views, present, mode="batch")
    changed = fused.clone()
    changed[1] += 5.0
    inputs_changed = torch.where(torch.tensor([0, 1, 0, 1, 0, 1]).bool().unsqueeze(-1), token, changed)
    torch.testing.assert_close(hypergraph(inputs_changed, views, present, mode="batch")[1], refined[1])
    assert base.item() > 0.0


def test_pretraining_reports_every_term_and_backpropagates(batch):
    config = MMSAConfig.from_preset("tiny")
    model = MMSAForPreTraining(config).train()
    out = model(**batch)
    for name in ("contrastive_loss", "reconstruction_loss", "hypergraph_loss", "memory_loss", "masked_attribute_loss"):
        value = getattr(out, name)
        assert torch.isfinite(value) and value.item() > 0, name
    out.loss.backward()
    assert model.hypergraph_mask_token.grad is not None and model.hypergraph_mask_token.grad.abs().sum() > 0
    assert model.mmsa.graph_encoder.atom_mask_embedding.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- descriptor targets


def test_descriptor_loss_is_the_masked_mse_of_the_pooled_graph_head():
    config = _graph_only(num_descriptors=5, masked_atom_ratio=0.0)
    model = MMSAForPreTraining(config).eval()
    batch = make_random_batch(num_molecules=4, seed=2, image_size=32)
    targets = torch.rand(4, 5)
    targets[1, 2] = float("nan")
    out = model(**batch, descriptor_targets=targets)
    pooled = model.mmsa(**batch).graph_pooled_output
    predictions = model.descriptor_head(pooled)
    observed = ~torch.isnan(targets)
    expected = (predictions[observed] - targets[observed]).pow(2).mean()
    assert float(out.descriptor_loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(model(**batch).descriptor_loss) == 0.0  # no targets, no term
    with pytest.raises(ValueError, match="num_descriptors=5"):
        model(**batch, descriptor_targets=torch.rand(4, 3))


def test_descriptor_term_trains_the_graph_encoder():
    config = _graph_only(num_descriptors=3, masked_atom_ratio=0.0, descriptor_weight=1.0)
    model = MMSAForPreTraining(config).train()
    batch = make_random_batch(num_molecules=4, seed=3, image_size=32)
    out = model(**batch, descriptor_targets=torch.rand(4, 3))
    assert float(out.loss) == pytest.approx(float(out.descriptor_loss), rel=1e-5)  # the only active term here
    out.loss.backward()
    gradient = model.mmsa.graph_encoder.atom_encoder.embeddings[0].weight.grad
    assert gradient is not None and gradient.abs().sum() > 0


def test_property_model_drops_the_descriptor_head(tmp_path):
    from mmsa_hf.modeling import MMSAForMolecularPropertyPrediction

    MMSAForPreTraining(_graph_only(num_descriptors=4)).save_pretrained(tmp_path)
    model, info = MMSAForMolecularPropertyPrediction.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["unexpected_keys"] and not any("descriptor" in k for k in model.state_dict())


# ---------------------------------------------------------------------------------------------- fingerprint targets


def test_fingerprint_loss_is_the_masked_bce_of_the_pooled_graph_head():
    config = _graph_only(num_fingerprint_bits=16, masked_atom_ratio=0.0)
    model = MMSAForPreTraining(config).eval()
    batch = make_random_batch(num_molecules=4, seed=2, image_size=32)
    targets = (torch.rand(4, 16) < 0.2).float()
    targets[2] = float("nan")  # a molecule RDKit could not fingerprint
    out = model(**batch, fingerprint_targets=targets)
    logits = model.fingerprint_head(model.mmsa(**batch).graph_pooled_output)
    observed = ~torch.isnan(targets)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[observed], targets[observed])
    assert float(out.fingerprint_loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(model(**batch).fingerprint_loss) == 0.0  # no targets, no term
    with pytest.raises(ValueError, match="num_fingerprint_bits=16"):
        model(**batch, fingerprint_targets=torch.zeros(4, 8))


def test_fingerprint_loss_falls_when_training_on_a_tiny_corpus():
    torch.manual_seed(0)
    config = _graph_only(num_fingerprint_bits=32, masked_atom_ratio=0.0, fingerprint_weight=1.0)
    model = MMSAForPreTraining(config).train()
    batch = make_random_batch(num_molecules=6, seed=5, image_size=32)
    targets = (torch.rand(6, 32) < 0.25).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        out = model(**batch, fingerprint_targets=targets)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.fingerprint_loss))
    assert losses[0] > 0.5 and losses[-1] < 0.5 * losses[0]


def test_property_model_drops_the_fingerprint_head(tmp_path):
    from mmsa_hf.modeling import MMSAForMolecularPropertyPrediction

    MMSAForPreTraining(_graph_only(num_fingerprint_bits=8)).save_pretrained(tmp_path)
    model, info = MMSAForMolecularPropertyPrediction.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["unexpected_keys"] and not any("fingerprint_head" in k for k in model.state_dict())
    assert model.config.num_fingerprint_bits == 8 and model.config.fingerprint_radius == 2


# ---------------------------------------------------------------------------------------------- assay targets


def test_assay_loss_is_the_masked_bce_over_measured_entries_and_round_trips(tmp_path):
    tasks = ["toxcast/A", "toxcast/B", "hiv/HIV_active"]
    config = _graph_only(assay_tasks=tasks, masked_atom_ratio=0.0)
    model = MMSAForPreTraining(config).eval()
    batch = make_random_batch(num_molecules=4, seed=3, image_size=32)
    targets = torch.tensor([[1.0, float("nan"), 0.0], [float("nan")] * 3, [0.0, 1.0, float("nan")], [1.0, 1.0, 0.0]])
    out = model(**batch, assay_targets=targets)
    logits = model.assay_head(model.mmsa(**batch).graph_pooled_output)
    measured = ~torch.isnan(targets)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[measured], targets[measured])
    assert float(out.assay_loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(model(**batch).assay_loss) == 0.0
    with pytest.raises(ValueError, match="num_assay_tasks=3"):
        model(**batch, assay_targets=torch.zeros(4, 2))
    model.save_pretrained(tmp_path)
    reloaded = MMSAForPreTraining.from_pretrained(tmp_path)
    assert reloaded.config.assay_tasks == tasks and reloaded.config.num_assay_tasks == 3
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name


def test_property_model_drops_the_assay_head_and_bad_task_names_raise(tmp_path):
    from mmsa_hf.modeling import MMSAForMolecularPropertyPrediction

    MMSAForPreTraining(_graph_only(assay_tasks=["hiv/HIV_active"])).save_pretrained(tmp_path)
    model, info = MMSAForMolecularPropertyPrediction.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["unexpected_keys"] and not any("assay_head" in k for k in model.state_dict())
    with pytest.raises(ValueError, match="assay_tasks"):
        _graph_only(assay_tasks=["HIV_active"])
