"""MMSAModel / MMSAForPreTraining: shapes, save/load, gradients, memory, batch independence, placeholders, dtypes."""

from __future__ import annotations

import copy

import pytest
import torch

from mmsa_hf.modeling import (
    MMSAForMolecularPropertyPrediction,
    MMSAForPreTraining,
    MMSAModel,
    MMSAModelOutput,
    MMSAPretrainingOutput,
)
from mmsa_hf.modeling.testing_utils import make_random_batch, subset_batch

from mmsa_modeling_testutils import assert_state_dicts_equal, tiny_config


# ---------------------------------------------------------------------------------------------------- forward


def test_model_output_shapes_and_placeholder_rows(config, batch):
    model = MMSAModel(config).eval()
    out = model(**batch, output_attentions=True)
    assert isinstance(out, MMSAModelOutput)
    B, N, D, K = batch["valid_mask"].numel(), batch["atom_features"].size(0), config.hidden_size, config.memory_num_anchors
    assert out.unified_embedding.shape == (B, D)
    assert out.fused_embedding.shape == (B, D)
    for name in ("graph_embedding", "image_embedding", "geometry_embedding"):
        assert getattr(out, name).shape == (B, D)
    assert out.graph_pooled_output.shape == (B, config.graph_hidden_size)
    assert out.image_pooled_output.shape == (B, config.image_config.hidden_sizes[-1])
    assert out.geometry_pooled_output.shape == (B, config.geometry_hidden_size)
    assert out.atom_embeddings.shape == (N, config.graph_hidden_size)
    assert out.geometry_atom_embeddings.shape == (N, config.geometry_hidden_size)
    assert out.anchor_assignments.shape == (B, K)
    assert out.modality_mask.shape == (B, 3)
    assert len(out.attentions) == config.fusion_num_layers
    assert out.attentions[0].shape == (B, config.fusion_num_heads, 4, 4)

    placeholder = ~batch["valid_mask"]
    atom_of_placeholder = placeholder[batch["batch"]]
    for name in ("unified_embedding", "fused_embedding", "graph_embedding", "anchor_assignments"):
        tensor = getattr(out, name)
        assert torch.all(tensor[placeholder] == 0), name
        assert torch.all(tensor[~placeholder].abs().sum(-1) > 0), name
    assert torch.all(out.atom_embeddings[atom_of_placeholder] == 0)
    assert not out.modality_mask[placeholder].any()
    assert out.modality_mask[~placeholder].all()
    assert torch.allclose(out.anchor_assignments[~placeholder].sum(-1), torch.ones(int((~placeholder).sum())))

    assert model.enabled_views() == ["graph", "image", "geometry"]
    assert list(out.view_embeddings) == ["graph", "image", "geometry"]
    assert out.view_embeddings["image"] is out.image_embedding
    assert "view_embeddings" not in out.keys()

    tuple_out = model(**batch, return_dict=False)
    assert isinstance(tuple_out, tuple)
    assert torch.equal(tuple_out[0], out.unified_embedding)


def test_forward_accepts_and_ignores_the_bookkeeping_keys(config, batch):
    model = MMSAModel(config).eval()
    reference = model(**batch).unified_embedding
    changed = dict(batch, smiles=["X"] * len(batch["smiles"]), input_indices=batch["input_indices"] + 7)
    changed["conformer_status"] = torch.full_like(batch["conformer_status"], 2)
    assert torch.equal(model(**changed).unified_embedding, reference)
    with pytest.raises(TypeError):
        model(**batch, not_a_contract_key=1)


def test_attention_ignores_missing_views(config, batch):
    model = MMSAModel(config).eval()
    mask = torch.ones(batch["valid_mask"].numel(), 3, dtype=torch.bool)
    mask[0, 1] = False  # molecule 0 has no image
    mask[1, 2] = False  # molecule 1 has no 3D view
    out = model(**batch, modality_mask=mask, output_attentions=True)
    weights = out.attentions[-1]
    assert torch.all(weights[0, :, :, 2] == 0)  # token 2 = image
    assert torch.all(weights[1, :, :, 3] == 0)  # token 3 = geometry
    assert torch.all(out.image_embedding[0] == 0)
    assert not out.modality_mask[0, 1] and not out.modality_mask[1, 2]


def test_missing_inputs_mean_missing_views(config, batch):
    model = MMSAModel(config).eval()
    # the views must be left out explicitly: a model that reads a view raises on a batch without it
    out = model(**dict(batch, pixel_values=None, pos=None, atomic_numbers=None), modalities=["graph"])
    assert out.image_embedding is None and out.geometry_embedding is None
    assert list(out.view_embeddings) == ["graph"]
    assert not out.modality_mask[:, 1:].any()
    assert torch.isfinite(out.unified_embedding).all()


def test_geometry_missing_statuses_masks_the_3d_view(batch):
    model = MMSAModel(tiny_config(geometry_missing_statuses=["2d_fallback"])).eval()
    batch = dict(batch)
    status = batch["conformer_status"].clone()
    status[0] = 2  # 2d_fallback
    batch["conformer_status"] = status
    out = model(**batch)
    assert not out.modality_mask[0, 2]
    assert out.modality_mask[1, 2]


def test_modality_dropout_keeps_at_least_one_view(batch):
    model = MMSAModel(tiny_config(modality_dropout=0.9)).train()  # single images reach BatchNorm: 48 px is enough
    out = model(**batch)
    valid = batch["valid_mask"]
    assert out.modality_mask[valid].any(dim=1).all()
    assert not out.modality_mask[valid].all()  # with p=0.9 something was dropped


# ---------------------------------------------------------------------------------------------------- save / load


def _train_one_step(model, batch):
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    if isinstance(model, MMSAForMolecularPropertyPrediction):
        labels = torch.randint(0, 2, (batch["valid_mask"].numel(), model.config.num_labels)).float()
        out = model(**batch, labels=labels)
    else:
        out = model(**batch)
    loss = out.loss if getattr(out, "loss", None) is not None else out.unified_embedding.square().mean()
    loss.backward()
    optimizer.step()
    model.eval()


@pytest.mark.parametrize("model_class", [MMSAModel, MMSAForPreTraining, MMSAForMolecularPropertyPrediction])
def test_save_and_reload_keeps_every_tensor(model_class, config, batch, tmp_path):
    model = model_class(config)
    initial_anchors = model.state_dict()["memory.anchors" if model_class is MMSAModel else "mmsa.memory.anchors"].clone()
    _train_one_step(model, batch)  # running stats, EMA anchors and weights are no longer at their init values
    model.save_pretrained(tmp_path)
    reloaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert_state_dicts_equal(model.state_dict(), reloaded.state_dict())
    anchors = "memory.anchors" if model_class is MMSAModel else "mmsa.memory.anchors"
    assert anchors in reloaded.state_dict()
    if model_class is MMSAForPreTraining:  # the EMA step moved them, and the moved values were saved
        assert not torch.equal(reloaded.state_dict()[anchors], initial_anchors)
    reloaded.eval()
    with torch.no_grad():
        a, b = model(**batch), reloaded(**batch)
    first = "unified_embedding" if model_class is MMSAModel else ("loss" if model_class is MMSAForPreTraining else "logits")
    assert torch.equal(a[first], b[first])


def test_fresh_model_has_no_uninitialised_tensors(config):
    model = MMSAForPreTraining(config)
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), name
            assert tensor.abs().max() < 100, name
    anchors = model.mmsa.memory.anchors
    assert torch.allclose(anchors.norm(dim=-1), torch.ones(anchors.size(0)), atol=1e-5)
    assert torch.equal(model.mmsa.geometry_encoder.rbf.offset, model.mmsa.geometry_encoder.rbf.reference_offset())


@pytest.mark.parametrize(
    "overrides",
    [{}, {"graph_train_eps": True, "graph_jk": "concat", "geometry_use_atom_features": True,
          "memory_update_rule": "gradient", "classifier_hidden_size": 8}],
)
def test_init_weights_covers_every_parameter_and_buffer(overrides):
    """Poison every tensor, forget the "initialised" flags and re-run the transformers init: nothing may be left
    over (this is what happens to tensors missing from a checkpoint, which are built on the meta device)."""
    model = MMSAForMolecularPropertyPrediction(tiny_config(**overrides))
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor.fill_(-7)
    for module in model.modules():
        module._is_hf_initialized = False
    model.initialize_weights()
    leftovers = [
        name
        for name, t in list(model.named_parameters()) + list(model.named_buffers())
        if (t.is_floating_point() and not torch.isfinite(t).all()) or (not t.is_floating_point() and (t == -7).any())
    ]
    assert not leftovers


# ---------------------------------------------------------------------------------------------------- gradients


def _grad_norms(model, prefixes):
    norms = {}
    for prefix in prefixes:
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix) and p.grad is not None]
        norms[prefix] = float(sum(g.abs().sum() for g in grads)) if grads else 0.0
    return norms


def test_gradients_reach_every_module_with_the_gradient_memory_rule(batch):
    model = MMSAForPreTraining(tiny_config(memory_update_rule="gradient")).train()
    out = model(**batch)
    assert isinstance(out, MMSAPretrainingOutput)
    for term in ("contrastive_loss", "reconstruction_loss", "hypergraph_loss", "memory_loss"):
        assert torch.isfinite(out[term]) and out[term] > 0, term
    out.loss.backward()
    norms = _grad_norms(
        model,
        [
            "mmsa.graph_encoder.",
            "mmsa.image_encoder.",
            "mmsa.geometry_encoder.",
            "mmsa.projections.",
            "mmsa.fusion.",
            "mmsa.hypergraph.",
            "mmsa.memory.anchors",
            "reconstruction_heads.",
        ],
    )
    assert all(v > 0 for v in norms.values()), norms
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_ema_rule_updates_anchors_without_gradients(config, batch):
    model = MMSAForPreTraining(config)
    anchors = model.mmsa.memory.anchors
    assert not anchors.requires_grad
    before = anchors.detach().clone()

    model.eval()
    model(**batch)  # eval: no update
    assert torch.equal(anchors, before)
    model.train()
    model(**batch, update_memory=False)
    assert torch.equal(anchors, before)

    out = model(**batch)
    out.loss.backward()
    assert anchors.grad is None
    assert not torch.equal(anchors, before)
    assert torch.allclose(anchors.norm(dim=-1), torch.ones(anchors.size(0)), atol=1e-5)
    assert 1 <= int(out.anchors_in_use) <= config.memory_num_anchors
    changed = (anchors - before).abs().sum(-1) > 0
    assert 1 <= int(changed.sum()) <= int(batch["valid_mask"].sum())  # only anchors that received a molecule


# ---------------------------------------------------------------------------------------------------- structure awareness


@pytest.mark.parametrize("overrides", [{}, {"use_memory": False}, {"memory_update_rule": "gradient", "fusion_num_layers": 2}])
def test_eval_embeddings_do_not_depend_on_the_batch(overrides):
    batch = make_random_batch(num_molecules=9, seed=3)
    model = MMSAModel(tiny_config(**overrides)).eval()
    with torch.no_grad():
        first = model(**subset_batch(batch, [0, 1, 2, 3, 4, 5]))
        second = model(**subset_batch(batch, [8, 4, 6, 3, 7, 5, 2]))
        alone = model(**subset_batch(batch, [4]))
    for name in ("unified_embedding", "fused_embedding", "anchor_assignments", "graph_pooled_output"):
        a, b = getattr(first, name), getattr(second, name)
        if a is None:
            continue
        torch.testing.assert_close(a[[2, 3, 4, 5]], b[[6, 3, 1, 5]], atol=1e-5, rtol=0, msg=name)
        torch.testing.assert_close(a[4], getattr(alone, name)[0], atol=1e-5, rtol=0, msg=name)


def test_training_hypergraph_links_batch_neighbours_and_eval_only_anchors(config):
    model = MMSAModel(config)
    hypergraph = model.hypergraph
    n, K = 5, config.memory_num_anchors
    fused = torch.randn(n, config.hidden_size)
    views = torch.randn(n, 3, config.hidden_size)
    present = torch.ones(n, 3, dtype=torch.bool)
    present[0, 1] = False
    sims = torch.randn(n, K)
    index, num_edges = hypergraph.build_hyperedges(fused, views, present, sims, mode="batch")
    assert num_edges == 3 * n - 1 + n  # one kNN hyperedge per present (molecule, view) + one anchor hyperedge each
    assert index[0].max() >= n  # anchors are nodes
    index, num_edges = hypergraph.build_hyperedges(fused, views, present, sims, mode="anchors")
    assert num_edges == n
    for e in range(n):  # each hyperedge = one molecule + its top-k anchors, no other molecule
        members = index[0, index[1] == e]
        molecules = members[members < n]
        assert molecules.tolist() == [e]
        assert (members >= n).sum() == config.hypergraph_anchor_k


def test_train_mode_embeddings_see_the_batch(config):
    # sanity check that the training hypergraph really mixes molecules (BatchNorm off the path: compare hypergraph)
    model = MMSAModel(config)
    hypergraph = model.hypergraph.train()
    fused = torch.randn(6, config.hidden_size)
    views = torch.randn(6, 3, config.hidden_size)
    present = torch.ones(6, 3, dtype=torch.bool)
    anchors = torch.nn.functional.normalize(torch.randn(config.memory_num_anchors, config.hidden_size), dim=-1)
    full = hypergraph(fused, views, present, anchors=anchors, mode="batch")
    part = hypergraph(fused[:3], views[:3], present[:3], anchors=anchors, mode="batch")
    assert not torch.allclose(full[:3], part, atol=1e-4)
    full = hypergraph(fused, views, present, anchors=anchors, mode="anchors")
    part = hypergraph(fused[:3], views[:3], present[:3], anchors=anchors, mode="anchors")
    torch.testing.assert_close(full[:3], part, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------- switches


@pytest.mark.parametrize(
    "switch",
    [
        {"use_image": False},
        {"use_geometry": False},
        {"use_hypergraph": False},
        {"use_memory": False},
        {"use_image": False, "use_geometry": False},
        {"memory_update_rule": "gradient", "memory_sinkhorn_iterations": 0},
        {"graph_jk": "concat", "hypergraph_consistency_target": "views", "reconstruction_loss_type": "mse"},
        {"graph_jk": "sum", "graph_pooling": "sum", "geometry_pooling": "max", "geometry_use_atom_features": True},
    ],
)
def test_each_switch_still_trains(switch):
    config = tiny_config(**switch)
    batch = make_random_batch(num_molecules=8, num_placeholders=1, seed=1)
    model = MMSAForPreTraining(config).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        out = model(**batch)
        assert torch.isfinite(out.loss)
        out.loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        optimizer.step()
        losses.append(out.loss.item())
    assert min(losses[-3:]) < losses[0], losses
    if not config.use_hypergraph:
        assert float(out.hypergraph_loss) == 0.0
    if not config.use_memory:
        assert float(out.memory_loss) == 0.0 and int(out.anchors_in_use) == 0
    if not config.use_image and not config.use_geometry:
        assert float(out.contrastive_loss) == 0.0  # a single view has nothing to contrast


# ---------------------------------------------------------------------------------------------------- placeholders


def test_placeholder_rows_change_nothing(config):
    batch = make_random_batch(num_molecules=5, num_placeholders=2, placeholder_positions=[0, 4], seed=2)
    other = dict(batch)
    placeholder = ~batch["valid_mask"]
    atoms = placeholder[batch["batch"]]
    g = torch.Generator().manual_seed(5)
    atom_features = batch["atom_features"].clone()
    atom_features[atoms] = torch.randint(0, 3, (int(atoms.sum()), 9), generator=g)
    other["atom_features"] = atom_features
    atomic_numbers = batch["atomic_numbers"].clone()
    atomic_numbers[atoms] = 6
    other["atomic_numbers"] = atomic_numbers
    pos = batch["pos"].clone()
    pos[atoms] = torch.randn(int(atoms.sum()), 3, generator=g) * 10
    other["pos"] = pos
    pixels = batch["pixel_values"].clone()
    pixels[placeholder] = torch.randn(int(placeholder.sum()), *pixels.shape[1:], generator=g)
    other["pixel_values"] = pixels

    model_a = MMSAForPreTraining(config).train()
    model_b = copy.deepcopy(model_a)
    torch.manual_seed(0)  # the masked atoms and the masked hypergraph rows are drawn from the global generator
    out_a = model_a(**batch)
    torch.manual_seed(0)
    out_b = model_b(**other)
    assert torch.equal(out_a.loss, out_b.loss)
    assert torch.equal(out_a.unified_embedding, out_b.unified_embedding)
    assert torch.equal(out_a.unified_embedding[placeholder], torch.zeros_like(out_a.unified_embedding[placeholder]))
    assert_state_dicts_equal(model_a.state_dict(), model_b.state_dict())  # BN running stats and EMA anchors

    # and the loss equals the loss of the batch without the placeholder rows
    model_c = copy.deepcopy(model_a)
    model_d = copy.deepcopy(model_a)
    model_c.load_state_dict(model_a.state_dict())
    valid_only = subset_batch(batch, batch["valid_mask"].nonzero().flatten().tolist())
    model_c.eval()
    model_d.eval()
    torch.testing.assert_close(
        model_c(**batch).loss, model_d(**valid_only).loss, atol=1e-5, rtol=0
    )


def test_all_placeholder_batch_gives_zero_loss_that_backpropagates(config):
    batch = make_random_batch(num_molecules=0, num_placeholders=2)
    model = MMSAForPreTraining(config).train()
    out = model(**batch)
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert torch.all(out.unified_embedding == 0)


def test_a_training_batch_of_one_single_atom_molecule_works(config):
    # BatchNorm cannot use batch statistics of one row: the GIN norms fall back to running statistics
    batch = make_random_batch(num_molecules=1, min_atoms=1, max_atoms=1, image_size=64, seed=4)
    model = MMSAForPreTraining(config).train()
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert out.contrastive_loss.item() == 0.0  # no negatives in a batch of one


# ---------------------------------------------------------------------------------------------------- dtype


def test_bfloat16_forward_and_backward(config, batch):
    model = MMSAForPreTraining(config).to(torch.bfloat16).train()
    out = model(**batch)  # float32 pixel_values / pos are cast inside
    assert out.unified_embedding.dtype == torch.bfloat16
    assert torch.isfinite(out.loss)
    out.loss.backward()
    model.eval()
    emb = model.mmsa(**batch).unified_embedding
    assert emb.dtype == torch.bfloat16 and torch.isfinite(emb.float()).all()


def test_bf16_autocast_training_step(config, batch):
    """Mixed precision as Accelerate runs it (fp32 weights, bf16 autocast): losses stay finite and
    the backward reaches the weights. Regression test for a dtype clash in the memory loss."""
    model = MMSAForPreTraining(config).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_old_pretraining_class_name_is_a_warning_alias(tmp_path):
    from mmsa_hf.modeling import MMSAForPretraining

    MMSAForPreTraining(tiny_config(use_image=False, use_geometry=False)).save_pretrained(tmp_path)
    with pytest.warns(FutureWarning, match="MMSAForPreTraining"):
        old = MMSAForPretraining.from_pretrained(tmp_path)
    new = MMSAForPreTraining.from_pretrained(tmp_path)
    assert isinstance(old, MMSAForPreTraining)
    for key, value in new.state_dict().items():
        assert torch.equal(old.state_dict()[key], value), key
