"""Issue 10's speed options: the shared filter network and the other geometry fields (config round trip, saved
tensors, invariance, the SchNet maths), the patchify image stem (round trip, formula, initialisation),
channels-last and bf16 autocast against the fp32 NCHW path."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from mmsa_hf.modeling import MMSAConfig, MMSAForPreTraining, MMSAModel
from mmsa_hf.modeling.configuration_mmsa import PRESETS
from mmsa_hf.modeling.encoder_geometry import MMSAGeometryEncoder, cosine_cutoff, radius_graph_per_molecule
from mmsa_hf.modeling.encoder_image import MMSAImageEncoder, MMSAPatchifyStem, MMSAPoolFirstResNetStem
from mmsa_hf.modeling.testing_utils import assert_invariant, make_random_batch

from mmsa_modeling_testutils import assert_state_dicts_equal, tiny_config

SPEED_FIELDS = {"geometry_num_filters": 24, "geometry_cutoff": 4.0, "geometry_shared_filter_network": True}


def _geometry_inputs(batch):
    return {k: batch[k] for k in ("atomic_numbers", "pos", "batch", "ptr", "atom_features")}


def test_geometry_speed_fields_round_trip(tmp_path):
    config = tiny_config(**SPEED_FIELDS)
    config.save_pretrained(tmp_path)
    loaded = MMSAConfig.from_pretrained(tmp_path)
    for name, value in SPEED_FIELDS.items():
        assert getattr(loaded, name) == value, name
    assert MMSAConfig().geometry_shared_filter_network is False  # class default: SchNet's per-block filters


@pytest.mark.parametrize("shared", [False, True])
def test_model_save_load_keeps_every_tensor(tmp_path, shared):
    model = MMSAForPreTraining(tiny_config(**{**SPEED_FIELDS, "geometry_shared_filter_network": shared}))
    model.save_pretrained(tmp_path)
    loaded = MMSAForPreTraining.from_pretrained(tmp_path)
    assert loaded.config.geometry_shared_filter_network is shared
    assert_state_dicts_equal(model.state_dict(), loaded.state_dict())


def test_filter_network_parameter_names():
    per_block = MMSAGeometryEncoder(tiny_config()).state_dict()
    shared = MMSAGeometryEncoder(tiny_config(geometry_shared_filter_network=True)).state_dict()
    # per-block names are those of checkpoints written before the option existed
    assert {"interactions.0.filter_network.0.weight", "interactions.1.filter_network.2.bias"} <= set(per_block)
    assert not any(k.startswith("filter_network") for k in per_block)
    assert {"filter_network.0.weight", "filter_network.2.bias"} <= set(shared)
    assert not any(".filter_network." in k for k in shared)
    assert sum(v.numel() for v in shared.values()) < sum(v.numel() for v in per_block.values())


def test_shared_filter_network_must_be_bool():
    with pytest.raises(ValueError, match="geometry_shared_filter_network"):
        tiny_config(geometry_shared_filter_network="yes")


@pytest.mark.parametrize("overrides", [SPEED_FIELDS, {**SPEED_FIELDS, "geometry_shared_filter_network": False}])
def test_geometry_encoder_invariance_with_speed_settings(overrides):
    batch = make_random_batch(num_molecules=5, num_placeholders=1, seed=11, max_atoms=14)
    encoder = MMSAGeometryEncoder(tiny_config(**overrides))
    assert assert_invariant(encoder, batch, atol=1e-4) < 1e-4


def _reference_schnet(encoder, atomic_numbers, pos, batch, ptr, **unused):
    """The 3D encoder written out layer by layer (filters recomputed in every block, as before the refactor)."""
    h = encoder.atom_type_embedding(atomic_numbers.clamp(0, encoder.num_atom_types - 1))
    (source, target), d = radius_graph_per_molecule(pos, batch, encoder.cutoff, ptr=ptr)
    rbf = torch.exp(encoder.rbf.coeff * (d.unsqueeze(-1) - encoder.rbf.offset) ** 2)
    envelope = 0.5 * (torch.cos(d * math.pi / encoder.cutoff) + 1.0)
    ssp = lambda x: F.softplus(x) - math.log(2.0)  # noqa: E731
    for block in encoder.interactions:
        network = block.filter_network if block.filter_network is not None else encoder.filter_network
        filters = network(rbf) * envelope.unsqueeze(-1)
        messages = block.in_projection(h)[source] * filters
        aggregated = torch.zeros(h.size(0), messages.size(1)).index_add(0, target, messages)
        h = h + block.output(ssp(block.out_projection(aggregated)))
    atoms = encoder.output_network(h)
    counts = torch.bincount(batch, minlength=ptr.numel() - 1).clamp(min=1).unsqueeze(-1)
    return torch.zeros(ptr.numel() - 1, atoms.size(1)).index_add(0, batch, atoms) / counts


@pytest.mark.parametrize("shared", [False, True])
def test_geometry_encoder_matches_the_schnet_formula(shared):
    batch = make_random_batch(num_molecules=4, seed=12, max_atoms=12)
    encoder = MMSAGeometryEncoder(tiny_config(geometry_shared_filter_network=shared)).eval()
    got = encoder(**_geometry_inputs(batch)).molecule_embedding
    torch.testing.assert_close(got, _reference_schnet(encoder, **_geometry_inputs(batch)), atol=1e-5, rtol=1e-5)


def test_compiled_message_passing_matches_eager_forward_and_backward():
    """``compile_message_passing`` (torch.compile, dynamic shapes) is the same maths: outputs and gradients match
    the eager encoder on two batches of different sizes, without compiling the second time."""
    import torch._dynamo

    torch._dynamo.reset()
    eager = MMSAGeometryEncoder(tiny_config())
    compiled = copy.deepcopy(eager)
    compiled.compile_message_passing()
    for seed, max_atoms in ((21, 12), (22, 16)):
        inputs = _geometry_inputs(make_random_batch(num_molecules=4, seed=seed, max_atoms=max_atoms))
        results = []
        for encoder in (eager, compiled):
            out = encoder(**inputs).molecule_embedding
            out.square().sum().backward()
            results.append((out.detach(), [p.grad.clone() for p in encoder.parameters() if p.grad is not None]))
            encoder.zero_grad(set_to_none=True)
        torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-4)
        assert len(results[1][1]) == len(results[0][1]) > 0
        for got, expected in zip(results[1][1], results[0][1]):
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert compiled.compiled_message_passing is not None  # still compiled: no fallback happened
    batch = make_random_batch(num_molecules=4, num_placeholders=1, seed=24, max_atoms=14)
    assert assert_invariant(compiled.eval(), batch, atol=1e-4) < 1e-4  # E(3) and atom order, compiled
    assert compiled.compiled_message_passing is not None
    copied = copy.deepcopy(compiled)  # a copy runs its own weights through the compiled function
    with torch.no_grad():
        for parameter in copied.parameters():
            parameter.mul_(1.5)
    reference = copy.deepcopy(copied)
    reference.compiled_message_passing = None
    torch.testing.assert_close(copied(**inputs).molecule_embedding, reference(**inputs).molecule_embedding,
                               atol=1e-5, rtol=1e-4)


def test_message_passing_falls_back_to_eager_with_a_warning_when_compiling_fails(monkeypatch, caplog):
    def failing_compile(function, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler found\nmore detail")
        return run

    encoder = MMSAGeometryEncoder(tiny_config()).eval()
    inputs = _geometry_inputs(make_random_batch(num_molecules=3, seed=23, max_atoms=10))
    expected = encoder(**inputs).molecule_embedding
    monkeypatch.setattr(torch, "compile", failing_compile)
    encoder.compile_message_passing()
    with caplog.at_level("WARNING"):
        got = encoder(**inputs).molecule_embedding
    torch.testing.assert_close(got, expected)
    assert encoder.compiled_message_passing is None
    assert "running it eagerly" in caplog.text and "no C++ compiler found" in caplog.text


def test_interaction_block_gives_the_same_output_with_one_filter_per_pair_or_per_edge():
    """The encoder runs each filter network once per unordered pair (W_ji = W_ij); a block given one radial basis
    row per edge computes the same messages, forward and backward."""
    batch = make_random_batch(num_molecules=4, seed=15, max_atoms=12)
    encoder = MMSAGeometryEncoder(tiny_config())
    block = encoder.interactions[0]
    edge_index, distance = radius_graph_per_molecule(batch["pos"], batch["batch"], encoder.cutoff, ptr=batch["ptr"])
    half = distance.size(0) // 2
    h = encoder.embed_atoms(batch["atomic_numbers"], None).detach().requires_grad_(True)
    outputs, grads = [], []
    for d in (distance, distance[:half]):
        out = block(h, edge_index, encoder.rbf(d), cosine_cutoff(d, encoder.cutoff))
        outputs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), [h, block.filter_network[0].weight]))
    torch.testing.assert_close(outputs[0], outputs[1])
    for per_edge, per_pair in zip(*grads):
        torch.testing.assert_close(per_edge, per_pair, atol=1e-5, rtol=1e-4)


def test_image_stem_round_trips_and_names_its_weights(tmp_path):
    model = MMSAForPreTraining(tiny_config(image_stem="patchify"))
    model.save_pretrained(tmp_path)
    loaded = MMSAForPreTraining.from_pretrained(tmp_path)
    assert loaded.config.image_stem == "patchify" and MMSAConfig().image_stem == "resnet"
    assert isinstance(loaded.mmsa.image_encoder.resnet.embedder, MMSAPatchifyStem)
    assert_state_dicts_equal(model.state_dict(), loaded.state_dict())
    names = set(model.state_dict())
    assert "mmsa.image_encoder.resnet.embedder.convolution.weight" in names
    assert not any(".embedder.embedder." in name for name in names)  # ResNet's own stem is gone
    assert "mmsa.image_encoder.resnet.embedder.embedder.convolution.weight" in MMSAForPreTraining(tiny_config()).state_dict()


def test_image_stem_must_be_a_known_choice():
    with pytest.raises(ValueError, match="image_stem"):
        tiny_config(image_stem="vit")


def test_stem_kernel_size_round_trips_and_keeps_resnet_stem_otherwise(tmp_path):
    model = MMSAForPreTraining(tiny_config(image_stem_kernel_size=3))
    model.save_pretrained(tmp_path)
    loaded = MMSAForPreTraining.from_pretrained(tmp_path)
    assert loaded.config.image_stem_kernel_size == 3 and MMSAConfig().image_stem_kernel_size == 7
    assert_state_dicts_equal(model.state_dict(), loaded.state_dict())
    stem = loaded.mmsa.image_encoder.resnet.embedder
    assert isinstance(stem, MMSAPoolFirstResNetStem)  # batch norm, ReLU and max pool as ResNet's
    convolution = stem.embedder.convolution
    assert convolution.weight.shape == (8, 3, 3, 3)
    assert (convolution.stride, convolution.padding) == ((2, 2), (1, 1))
    pixels = torch.randn(2, 3, 40, 40)
    seven = MMSAImageEncoder(tiny_config()).resnet.embedder.eval()
    assert stem.eval()(pixels).shape == seven(pixels).shape == (2, 8, 10, 10)


@pytest.mark.parametrize("overrides, message", [
    ({"image_stem_kernel_size": 4}, "odd integer"),
    ({"image_stem_kernel_size": 0}, "odd integer"),
    ({"image_stem_kernel_size": 3, "image_stem": "patchify"}, "own kernel"),
])
def test_stem_kernel_size_is_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


@pytest.mark.parametrize("stem, kernel, padding", [("patchify", 4, 0), ("overlapping_patchify", 7, 3)])
def test_patch_stems_match_their_formula_and_resnet_stem_shape(stem, kernel, padding):
    encoder = MMSAImageEncoder(tiny_config(image_stem=stem)).eval()
    module = encoder.resnet.embedder
    assert isinstance(module, MMSAPatchifyStem) and module.convolution.weight.shape == (8, 3, kernel, kernel)
    with torch.no_grad():
        module.normalization.running_mean.uniform_(-0.5, 0.5)
        module.normalization.running_var.uniform_(0.5, 2.0)
        module.normalization.weight.uniform_(0.5, 1.5)
        pixels = torch.randn(3, 3, 40, 40)
        norm = module.normalization
        convolved = F.conv2d(pixels, module.convolution.weight, stride=4, padding=padding)
        expected = F.relu(F.batch_norm(convolved, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                       eps=norm.eps))
        torch.testing.assert_close(module(pixels), expected)
        resnet_stem = MMSAImageEncoder(tiny_config()).resnet.embedder.eval()
        assert module(pixels).shape == resnet_stem(pixels).shape == (3, 8, 10, 10)
    with pytest.raises(ValueError, match="channels"):
        module(torch.randn(1, 1, 40, 40))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_pool_first_stem_gives_resnet_stem_outputs_and_gradients(memory_format):
    from transformers import ResNetConfig
    from transformers.models.resnet.modeling_resnet import ResNetEmbeddings

    torch.manual_seed(0)
    reference = ResNetEmbeddings(ResNetConfig(embedding_size=16)).train()
    with torch.no_grad():
        reference.embedder.normalization.weight.uniform_(-1.5, 1.5)  # some channels flipped: BN is not monotone
        reference.embedder.normalization.bias.uniform_(-0.5, 0.5)
    pool_first = MMSAPoolFirstResNetStem(copy.deepcopy(reference)).train()
    pixels = torch.randn(4, 3, 40, 40).contiguous(memory_format=memory_format)
    outputs, grads = [], []
    for stem in (reference, pool_first):
        image = pixels.clone().requires_grad_(True)
        out = stem(image)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outputs.append(out)
        grads.append([image.grad] + [p.grad for p in stem.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-6, rtol=1e-5)
    assert (outputs[0] == 0).float().mean() > 0.1  # windows with no positive value: the case that needs care
    for got, expected in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pool_first.embedder.normalization.running_mean,
                               reference.embedder.normalization.running_mean)


def test_pool_first_stem_only_for_relu_and_keeps_resnet_weight_names():
    encoder = MMSAImageEncoder(tiny_config())
    assert isinstance(encoder.resnet.embedder, MMSAPoolFirstResNetStem)
    assert "resnet.embedder.embedder.convolution.weight" in encoder.state_dict()
    assert "resnet.embedder.pooler" in dict(encoder.named_modules())
    gelu = MMSAImageEncoder(tiny_config(image_config={"hidden_act": "gelu"}))
    assert type(gelu.resnet.embedder).__name__ == "ResNetEmbeddings"  # GELU does not commute with max pooling


def test_patchify_stem_gets_resnet_kaiming_initialisation():
    torch.manual_seed(0)
    encoder = MMSAModel(MMSAConfig.from_preset("base", image_stem="patchify")).image_encoder
    weight = encoder.resnet.embedder.convolution.weight  # [64, 3, 4, 4]: fan-out 64 * 16
    assert abs(float(weight.detach().std()) / math.sqrt(2.0 / (64 * 16)) - 1.0) < 0.1
    assert torch.equal(encoder.resnet.embedder.normalization.weight, torch.ones(64))


@pytest.mark.parametrize("stem", ["resnet", "patchify", "overlapping_patchify"])
def test_image_encoder_channels_last_matches_nchw(stem):
    encoder = MMSAImageEncoder(tiny_config(image_stem=stem)).eval()
    pixels = torch.randn(4, 3, 48, 48)
    encoder.memory_format = torch.channels_last
    fast = encoder(pixels).molecule_embedding
    encoder.memory_format = torch.contiguous_format
    reference = encoder(pixels).molecule_embedding
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-4)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-12))


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    batch = make_random_batch(num_molecules=6, num_placeholders=1, seed=13)
    model = MMSAModel(tiny_config(**SPEED_FIELDS)).eval()
    model.image_encoder.memory_format = torch.contiguous_format
    with torch.no_grad():
        reference = model(**batch)
        model.image_encoder.memory_format = torch.channels_last
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model(**batch)
    for name in ("graph_pooled_output", "image_pooled_output", "geometry_pooled_output", "unified_embedding"):
        assert _relative_error(getattr(fast, name), getattr(reference, name)) < 3e-2, name


def test_bf16_autocast_training_step_gives_finite_gradients():
    batch = make_random_batch(num_molecules=6, seed=14)
    model = MMSAForPreTraining(tiny_config(**SPEED_FIELDS)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads and all(torch.isfinite(g).all() for g in grads)
    assert all(g.dtype == torch.float32 for g in grads)  # master weights stay fp32


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_document_the_speed_fields(preset):
    config = MMSAConfig.from_preset(preset)
    for name in ("geometry_num_filters", "geometry_cutoff", "geometry_shared_filter_network", "image_stem"):
        assert name in PRESETS[preset], (preset, name)
        assert getattr(config, name) == PRESETS[preset][name]


def test_channels_last_is_automatic_only_where_the_cpu_backward_is_known_to_run():
    from mmsa_hf.modeling import MMSAConfig

    pixels = torch.randn(2, 3, 32, 32)
    narrow = MMSAImageEncoder(tiny_config())  # 8-channel stem: torch 2.13's oneDNN backward can crash at 224 px
    wide = MMSAImageEncoder(MMSAConfig.from_preset("small"))
    assert narrow.input_memory_format(pixels) == torch.contiguous_format
    assert wide.input_memory_format(pixels) == torch.channels_last
    narrow.memory_format = torch.channels_last  # an explicit choice wins
    assert narrow.input_memory_format(pixels) == torch.channels_last
