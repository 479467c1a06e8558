"""A shared model test suite in the style of transformers' ``ModelTesterMixin`` (``tests/test_modeling_common.py``).

``MMSAModelTester`` builds a tiny config and a random contract batch (``make_random_batch``, no RDKit) for one model
class and one config variant (``"full"``: every view; ``"graph_only"``: ``use_image=False, use_geometry=False``).
``MMSAModelTesterMixin`` holds the tests; ``test_modeling_common.py`` applies it to one test class per model class,
which states what is specific to that class (its output fields and their shapes, its training objective, the
parameters its objective does not reach, the outputs that are batch statistics by definition).

Not a test module (no ``test_`` prefix): import the mixin from here to apply it to a new model class.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import pickle
import re

import pytest
import safetensors.torch
import torch
from torch import nn
from torch_geometric.nn import GINEConv, HypergraphConv

from mmsa_hf.modeling import MMSAConfig
from mmsa_hf.modeling.encoder_geometry import MMSAGaussianRBF
from mmsa_hf.modeling.testing_utils import make_random_batch, subset_batch

from mmsa_modeling_testutils import assert_state_dicts_equal

#: config variants every model class is tested with
VARIANTS = {"full": {}, "graph_only": {"use_image": False, "use_geometry": False}}

#: the batch-contract keys of the image and 3D views (a graph-only processor does not compute them)
VIEW_INPUT_KEYS = ("pixel_values", "pos", "atomic_numbers")

#: tolerance of comparisons between a batch and a sub-batch (different matrix shapes, so different rounding)
BATCH_ATOL = 1e-5


class MMSAModelTester:
    """Tiny config + random inputs for ``model_class`` in config ``variant``.

    The batch holds ``num_molecules`` random molecules and one placeholder row (``valid_mask`` False) at
    ``placeholder_position``. The sizes below are pairwise distinct (batch 6, anchors 5, D 24, GIN 20, 3D 28, image
    16, 3 heads, 2 fusion layers, 7 labels), so a test that reads the wrong size for a dimension fails.
    """

    num_molecules = 5
    placeholder_position = 2
    image_size = 32  # the tiny ResNet reaches 1x1 at 32 px
    config_overrides = {
        "hidden_size": 24,
        "graph_hidden_size": 20,
        "geometry_hidden_size": 28,
        "fusion_num_heads": 3,
        "fusion_num_layers": 2,
        "memory_num_anchors": 5,
        "hypergraph_anchor_k": 2,
        "num_labels": 7,
    }

    def __init__(self, model_class, variant: str = "full", seed: int = 0):
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}")
        self.model_class = model_class
        self.variant = variant
        self.seed = seed
        self._batch = make_random_batch(
            num_molecules=self.num_molecules, num_placeholders=1, placeholder_positions=[self.placeholder_position],
            image_size=self.image_size, seed=seed,
        )

    # ------------------------------------------------------------------ config
    @property
    def graph_only(self) -> bool:
        return self.variant == "graph_only"

    def get_config(self, **overrides) -> MMSAConfig:
        return MMSAConfig.from_preset("tiny", **{**self.config_overrides, **VARIANTS[self.variant], **overrides})

    def create_model(self, config: MMSAConfig | None = None, seed: int = 0):
        torch.manual_seed(seed)
        return self.model_class(config if config is not None else self.get_config())

    # ------------------------------------------------------------------ inputs
    @property
    def batch_size(self) -> int:
        return int(self._batch["valid_mask"].numel())

    @property
    def num_atoms(self) -> int:
        return int(self._batch["atom_features"].size(0))

    @property
    def valid_mask(self) -> torch.Tensor:
        return self._batch["valid_mask"]

    def prepare_inputs(self, indices=None, with_views: bool | None = None) -> dict:
        """The batch (or the molecules ``indices`` of it, re-collated), as a processor for this variant would give
        it: a graph-only batch has no ``pixel_values`` / ``pos`` / ``atomic_numbers`` unless ``with_views``."""
        batch = dict(self._batch) if indices is None else subset_batch(self._batch, indices)
        if with_views is None:
            with_views = not self.graph_only
        if not with_views:
            for key in VIEW_INPUT_KEYS:
                batch.pop(key, None)
        return batch

    def prepare_labels(self, batch_size: int | None = None, num_labels: int | None = None) -> torch.Tensor:
        """Binary multi-task labels ``[B, num_labels]`` with one missing (NaN) entry."""
        batch_size = self.batch_size if batch_size is None else batch_size
        num_labels = self.config_overrides["num_labels"] if num_labels is None else num_labels
        g = torch.Generator().manual_seed(self.seed + 1)
        labels = torch.randint(0, 2, (batch_size, num_labels), generator=g).float()
        labels[0, 0] = float("nan")
        return labels

    def prepare_config_and_inputs_for_common(self) -> tuple[MMSAConfig, dict]:
        return self.get_config(), self.prepare_inputs()


# ---------------------------------------------------------------------------------------------- helpers


def output_fields(output) -> dict:
    """Every dataclass field of a ``ModelOutput`` (``None`` included, unlike ``ModelOutput.keys()``)."""
    return {field.name: getattr(output, field.name) for field in dataclasses.fields(output)}


def assert_tensors_identical(x: torch.Tensor, y: torch.Tensor, where: str) -> None:
    """Same dtype, shape and values exactly (NaN where the other has NaN: the property predictions of placeholder
    rows are NaN)."""
    assert x.dtype == y.dtype and x.shape == y.shape, where
    torch.testing.assert_close(y, x, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{where}: {m}")


def assert_outputs_equal(a, b, context: str = "") -> None:
    """Exact equality of two model outputs, field by field (tuples of tensors, such as attentions, included)."""
    fields_a, fields_b = output_fields(a), output_fields(b)
    assert fields_a.keys() == fields_b.keys()
    for name, x in fields_a.items():
        y = fields_b[name]
        where = f"{context}{name}"
        assert (x is None) == (y is None), where
        if isinstance(x, tuple):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y)):
                assert_tensors_identical(u, v, f"{where}[{i}]")
        elif x is not None:
            assert_tensors_identical(x, y, where)


def snapshot(model) -> dict:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


@torch.no_grad()
def perturb_(model, seed: int = 1) -> None:
    """Move every saved tensor away from its initial value (positive noise keeps BatchNorm variances positive), so
    a save/load test cannot pass by re-initialising a tensor instead of loading it."""
    g = torch.Generator().manual_seed(seed)
    for tensor in model.state_dict().values():  # detached views sharing the model's storage
        if tensor.is_floating_point():
            tensor.add_(torch.rand(tensor.shape, generator=g, dtype=tensor.dtype) * 0.05)
        else:
            tensor.add_(3)


def comparable_config(config) -> dict:
    """``config.to_dict()`` without what loading sets by itself: the path, the transformers version and the
    ResNet sub-config's ``dtype`` (None when built, the load dtype after ``from_pretrained``)."""
    d = config.to_dict()
    for key in ("_name_or_path", "transformers_version"):
        d.pop(key, None)
    d["image_config"] = {k: v for k, v in d["image_config"].items() if k != "dtype"}
    return d


def deterministic_init_keys(model) -> set[str]:
    """The state-dict entries that ``_init_weights`` sets without the random generator: BatchNorm / LayerNorm
    weights, biases and running statistics, the GIN ``eps``, the RBF centres and the HypergraphConv biases."""
    keys = set()
    for prefix, module in model.named_modules():
        prefix = f"{prefix}." if prefix else ""
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
            keys |= {prefix + name for name in module.state_dict()}
        elif isinstance(module, GINEConv):
            keys.add(prefix + "eps")
        elif isinstance(module, MMSAGaussianRBF):
            keys.add(prefix + "offset")
        elif isinstance(module, HypergraphConv) and module.bias is not None:
            keys.add(prefix + "bias")
    return keys


def matching(names, patterns: dict[str, str]) -> set[str]:
    """The ``names`` that fully match one of the regular expressions ``patterns`` (keys); every pattern must match
    at least one name, so an expectation table cannot rot silently."""
    selected = set()
    for pattern in patterns:
        hits = {name for name in names if re.fullmatch(pattern, name)}
        assert hits, f"expectation {pattern!r} matches no parameter"
        selected |= hits
    return selected


# ---------------------------------------------------------------------------------------------- the mixin


class MMSAModelTesterMixin:
    """The common tests. A test class sets ``model_class`` and implements the class-specific hooks below."""

    model_class = None
    #: the models return fusion attention weights (``output_attentions``); they have no ``output_hidden_states``
    has_attentions = True
    has_hidden_states = False
    #: scalar outputs that summarise the whole batch (losses with in-batch negatives, counts): not per molecule
    batch_level_fields: tuple[str, ...] = ()

    # ------------------------------------------------------------------ hooks
    def forward_kwargs(self, tester: MMSAModelTester, batch_size: int | None = None) -> dict:
        """Extra forward arguments (labels) besides the batch."""
        return {}

    def expected_output_shapes(self, tester: MMSAModelTester, config) -> dict:
        """``{field: shape}`` for every field of the output (``None``: the field must be ``None``); ``attentions``
        is checked by ``test_attention_outputs``."""
        raise NotImplementedError

    def training_objective(self, output) -> torch.Tensor:
        return output.loss

    def parameters_without_gradient(self, tester: MMSAModelTester) -> dict[str, str]:
        """``{regex on parameter names: why}`` for the trainable parameters the objective does not reach."""
        return {}

    def frozen_parameters(self, tester: MMSAModelTester) -> dict[str, str]:
        """``{regex: why}`` for the parameters with ``requires_grad=False``."""
        return {r"(mmsa\.)?memory\.anchors": "EMA memory rule (the default): anchors move by ema_update, not SGD"}

    def attentions_expected(self, tester: MMSAModelTester) -> bool:
        """Whether the forward runs the fusion, hence can return its attention weights."""
        return True

    # ------------------------------------------------------------------ fixtures
    @pytest.fixture(params=list(VARIANTS))
    def tester(self, request) -> MMSAModelTester:
        return MMSAModelTester(self.model_class, variant=request.param)

    def _forward(self, model, tester, inputs=None, **kwargs):
        inputs = tester.prepare_inputs() if inputs is None else inputs
        batch_size = int(inputs["valid_mask"].numel())
        return model(**inputs, **self.forward_kwargs(tester, batch_size), **kwargs)

    # ------------------------------------------------------------------ config
    def test_config_to_dict_from_dict_round_trip(self, tester):
        config = tester.get_config()
        before = config.to_dict()
        model = tester.create_model(config)
        assert model.config.to_dict() == before, "building the model changed its config"
        for restored in (MMSAConfig.from_dict(before), MMSAConfig.from_dict(json.loads(config.to_json_string()))):
            assert restored.to_dict() == before
            assert type(restored.image_config) is type(config.image_config)
            twin = self.model_class(restored)
            assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
            twin.load_state_dict(model.state_dict())
            with torch.no_grad():
                assert_outputs_equal(self._forward(model.eval(), tester), self._forward(twin.eval(), tester))

    # ------------------------------------------------------------------ save / load
    def test_save_load_keeps_every_tensor_and_the_outputs(self, tester, tmp_path):
        model = tester.create_model()
        perturb_(model)
        model.save_pretrained(tmp_path)
        reloaded, info = self.model_class.from_pretrained(tmp_path, output_loading_info=True)
        assert type(reloaded) is self.model_class
        assert not reloaded.training  # from_pretrained returns the model in eval mode
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
        assert_state_dicts_equal(model.state_dict(), reloaded.state_dict())
        assert comparable_config(reloaded.config) == comparable_config(model.config)
        with torch.no_grad():
            assert_outputs_equal(self._forward(model.eval(), tester), self._forward(reloaded, tester))

    def test_saved_weights_are_safetensors_without_pickle(self, tester, tmp_path, monkeypatch):
        model = tester.create_model()
        perturb_(model)

        def forbidden(*args, **kwargs):
            raise AssertionError("pickle / torch.save / torch.load used for the weights")

        monkeypatch.setattr(torch, "save", forbidden)
        monkeypatch.setattr(pickle, "dump", forbidden)
        model.save_pretrained(tmp_path)
        files = sorted(p.name for p in tmp_path.iterdir())
        assert "config.json" in files and "model.safetensors" in files
        pickled = [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
        assert not pickled, pickled
        assert [f for f in files if "safetensors" in f] == ["model.safetensors"]  # one unsharded weight file
        saved = safetensors.torch.load_file(tmp_path / "model.safetensors")
        assert_state_dicts_equal(saved, model.state_dict())
        monkeypatch.setattr(torch, "load", forbidden)
        monkeypatch.setattr(pickle, "load", forbidden)
        monkeypatch.setattr(pickle, "loads", forbidden)
        assert_state_dicts_equal(self.model_class.from_pretrained(tmp_path).state_dict(), model.state_dict())

    # ------------------------------------------------------------------ outputs
    def test_output_fields_and_shapes(self, tester):
        config = tester.get_config()
        model = tester.create_model(config).eval()
        with torch.no_grad():
            output = self._forward(model, tester)
        expected = self.expected_output_shapes(tester, config)
        fields = output_fields(output)
        assert set(fields) - {"attentions"} == set(expected), "every output field needs an expected shape"
        for name, shape in expected.items():
            value = fields[name]
            if shape is None:
                assert value is None, f"{name} should be None in the {tester.variant} variant"
                continue
            assert value is not None, name
            assert tuple(value.shape) == tuple(shape), f"{name}: {tuple(value.shape)} != {tuple(shape)}"
            if name in ("modality_mask", "valid_mask"):
                assert value.dtype == torch.bool, name
            elif name == "anchors_in_use":
                assert value.dtype == torch.long, name
            else:
                assert value.dtype == torch.float32, name
                rows = value[tester.valid_mask] if name == "predictions" else value  # NaN for placeholder rows
                assert torch.isfinite(rows).all(), name
        assert torch.equal(output.valid_mask, tester.valid_mask)

    def test_return_dict_false_gives_the_same_values_as_a_tuple(self, tester):
        model = tester.create_model().eval()
        with torch.no_grad():
            as_dict = self._forward(model, tester, output_attentions=True)
            as_tuple = self._forward(model, tester, output_attentions=True, return_dict=False)
            model.config.return_dict = False
            from_config = self._forward(model, tester, output_attentions=True)
        for result in (as_tuple, from_config):
            assert isinstance(result, tuple)
            expected = as_dict.to_tuple()
            assert len(result) == len(expected)
            for i, (got, want) in enumerate(zip(result, expected)):
                if isinstance(want, tuple):
                    assert len(got) == len(want)
                    for u, v in zip(got, want):
                        assert_tensors_identical(u, v, f"tuple[{i}]")
                else:
                    assert_tensors_identical(got, want, f"tuple[{i}]")

    def test_attention_outputs(self, tester):
        config = tester.get_config()
        model = tester.create_model(config).eval()
        with torch.no_grad():
            plain = self._forward(model, tester)
            output = self._forward(model, tester, output_attentions=True)
            model.config.output_attentions = True  # the config default is honoured too
            by_config = self._forward(model, tester)
        assert plain.attentions is None
        assert_outputs_equal(by_config, output)
        plain_fields = {k: v for k, v in output_fields(plain).items() if k != "attentions"}
        for name, value in plain_fields.items():  # asking for the weights changes nothing else
            other = getattr(output, name)
            assert (value is None) == (other is None), name
            if value is not None:
                assert_tensors_identical(value, other, name)
        if not self.attentions_expected(tester):
            assert output.attentions is None
            return
        B, valid = tester.batch_size, tester.valid_mask
        assert isinstance(output.attentions, tuple) and len(output.attentions) == config.fusion_num_layers
        for weights in output.attentions:
            assert weights.shape == (B, config.fusion_num_heads, 4, 4)  # [FUSE] + graph, image, geometry
            torch.testing.assert_close(weights[valid].sum(-1), torch.ones(int(valid.sum()), config.fusion_num_heads, 4))
            assert torch.all(weights[~valid] == 0)  # placeholder rows
            absent = [2, 3] if tester.graph_only else []  # image / geometry tokens of a graph-only model
            assert torch.all(weights[..., absent] == 0)
            assert torch.all(weights[valid][..., [0, 1]] > 0)

    def test_hidden_states_are_not_part_of_the_api(self):
        """No model returns per-layer hidden states, so this suite has no hidden-states test; this fails (and a test
        should then be written) as soon as a forward accepts ``output_hidden_states``."""
        assert self.has_hidden_states == ("output_hidden_states" in inspect.signature(self.model_class.forward).parameters)
        assert self.has_attentions == ("output_attentions" in inspect.signature(self.model_class.forward).parameters)

    # ------------------------------------------------------------------ determinism
    def test_eval_forward_is_deterministic_and_changes_no_tensor(self, tester):
        model = tester.create_model().eval()
        before = snapshot(model)
        with torch.no_grad():
            torch.manual_seed(1)
            first = self._forward(model, tester, output_attentions=True)
            torch.manual_seed(2)  # eval mode draws nothing from the global generator
            second = self._forward(model, tester, output_attentions=True)
        assert_outputs_equal(first, second)
        assert_state_dicts_equal(before, model.state_dict())  # no BatchNorm statistics, no EMA anchor update

    # ------------------------------------------------------------------ training
    def test_loss_is_a_finite_scalar_and_reaches_every_used_parameter(self, tester):
        model = tester.create_model().train()
        output = self._forward(model, tester)
        loss = self.training_objective(output)
        assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss)
        loss.backward()
        parameters = dict(model.named_parameters())
        frozen = {name for name, p in parameters.items() if not p.requires_grad}
        assert frozen == matching(parameters, self.frozen_parameters(tester))
        trainable = {name: p for name, p in parameters.items() if p.requires_grad}
        unreached = {name for name, p in trainable.items() if p.grad is None or not bool(p.grad.abs().sum() > 0)}
        expected = matching(trainable, self.parameters_without_gradient(tester))
        assert unreached == expected, {"unexpectedly without gradient": sorted(unreached - expected),
                                       "listed as unused but reached": sorted(expected - unreached)}
        bad = [name for name, p in trainable.items() if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, bad

    # ------------------------------------------------------------------ batch independence
    def test_eval_outputs_of_a_molecule_do_not_depend_on_the_batch(self, tester):
        """Eval mode: BatchNorm uses running statistics, the hypergraph links a molecule only to the memory anchors
        (``"anchors"`` mode; the property model always uses it), the memory assignment and the fusion are per
        molecule. So every per-molecule and per-atom output must be the same in any batch. Outputs listed in
        ``batch_level_fields`` summarise the batch (in-batch negatives, Sinkhorn over the batch) and are skipped.
        In training mode molecules are coupled on purpose (kNN hyperedges, BatchNorm batch statistics): not
        tested."""
        model = tester.create_model().eval()
        full_inputs = tester.prepare_inputs()
        with torch.no_grad():
            full = self._forward(model, tester, full_inputs, output_attentions=True)
            parts = {indices: self._forward(model, tester, tester.prepare_inputs(list(indices)), output_attentions=True)
                     for indices in ((4, 2, 0), (3,))}  # reordered, with the placeholder row; a batch of one
        B, N, ptr = tester.batch_size, tester.num_atoms, full_inputs["ptr"]
        compared = set()
        for indices, part in parts.items():
            sub_ptr = tester.prepare_inputs(list(indices))["ptr"]
            atoms = torch.cat([torch.arange(int(ptr[i]), int(ptr[i + 1])) for i in indices])
            for name, value in output_fields(full).items():
                other = getattr(part, name)
                if value is None or name in self.batch_level_fields:
                    assert name not in self.batch_level_fields or value.dim() == 0, name
                    continue
                values = value if isinstance(value, tuple) else (value,)
                others = other if isinstance(other, tuple) else (other,)
                for a, b in zip(values, others):
                    if a.size(0) == B and b.size(0) == len(indices):
                        a = a[list(indices)]
                    elif a.size(0) == N and b.size(0) == int(sub_ptr[-1]):
                        a = a[atoms]
                    else:
                        raise AssertionError(f"{name}: neither per molecule nor per atom, add it to batch_level_fields")
                    torch.testing.assert_close(b, a, atol=BATCH_ATOL, rtol=0, equal_nan=True, msg=lambda m: f"{name}: {m}")
                compared.add(name)
        assert compared, "nothing compared"

    # ------------------------------------------------------------------ initialisation
    def test_post_init_weights_follow_the_seed(self, tester):
        config = tester.get_config()
        first = snapshot(tester.create_model(config, seed=0))
        again = snapshot(tester.create_model(config, seed=0))
        assert_state_dicts_equal(first, again)
        other_model = tester.create_model(config, seed=1)
        other = snapshot(other_model)
        unchanged = {key for key in first if torch.equal(first[key], other[key])}
        assert unchanged == deterministic_init_keys(other_model), sorted(unchanged ^ deterministic_init_keys(other_model))

    def test_reinitialising_weights_is_reproducible(self, tester):
        """``initialize_weights`` (what ``post_init`` and ``from_pretrained`` run for tensors missing from a
        checkpoint) gives the same tensors for the same seed, whatever the tensors held before."""
        config = tester.get_config()
        results = []
        for poison in (float("nan"), 123.0):
            model = tester.create_model(config, seed=5)
            with torch.no_grad():
                for tensor in list(model.parameters()) + list(model.buffers()):
                    tensor.fill_(poison) if tensor.is_floating_point() else tensor.fill_(-7)
            for module in model.modules():
                module._is_hf_initialized = False
            torch.manual_seed(3)
            model.initialize_weights()
            results.append(snapshot(model))
        assert_state_dicts_equal(*results)

    def test_init_weights_uses_the_initializer_range(self, tester):
        """The learned tokens that the constructors create as zeros are drawn by ``_init_weights`` from
        ``N(0, initializer_range)``."""
        for std in (0.02, 0.5):
            model = tester.create_model(tester.get_config(initializer_range=std))
            tokens = {name: p for name, p in model.named_parameters()
                      if re.search(r"fuse_token|modality_embeddings|mask_embedding|hypergraph_mask_token", name)}
            assert len(tokens) >= 4, sorted(tokens)
            for name, p in tokens.items():
                assert std / 2 < float(p.detach().std()) < 2 * std, (name, float(p.detach().std()), std)
                assert abs(float(p.detach().mean())) < std, name

    # ------------------------------------------------------------------ graph-only variant
    def test_variant_builds_exactly_the_enabled_views(self, tester):
        keys = tester.create_model().state_dict().keys()
        for view in ("image", "geometry"):
            view_keys = [k for k in keys if re.search(rf"(^|\.)({view}_encoder|projections\.{view}|reconstruction_heads\.{view})\.", k)]
            if tester.graph_only:
                assert not view_keys, view_keys[:5]
            else:
                assert any(f"{view}_encoder." in k for k in view_keys) and any("projections." in k for k in view_keys)

    def test_graph_only_model_ignores_image_and_geometry_inputs(self):
        tester = MMSAModelTester(self.model_class, variant="graph_only")
        model = tester.create_model().eval()
        with torch.no_grad():
            without = self._forward(model, tester, tester.prepare_inputs(with_views=False), output_attentions=True)
            with_views = self._forward(model, tester, tester.prepare_inputs(with_views=True), output_attentions=True)
        assert_outputs_equal(without, with_views)


class MMSAHeadModelTesterMixin:
    """Tests of a task model (``MMSAModel`` backbone under ``mmsa.`` + heads) against the bare backbone."""

    #: state-dict prefixes that exist in the task model but not in ``MMSAModel``, per variant
    def head_only_key_patterns(self, tester: MMSAModelTester) -> set[str]:
        raise NotImplementedError

    def test_backbone_checkpoint_loads_into_the_head_model_and_back(self, tester, tmp_path):
        from mmsa_hf.modeling import MMSAModel

        backbone = MMSAModel(tester.get_config())
        perturb_(backbone)
        backbone.save_pretrained(tmp_path / "backbone")
        model, info = self.model_class.from_pretrained(tmp_path / "backbone", output_loading_info=True)
        assert not info["unexpected_keys"] and not info["mismatched_keys"]
        assert set(info["missing_keys"]) == {k for k in model.state_dict() if not k.startswith("mmsa.")}
        assert_state_dicts_equal({f"mmsa.{k}": v for k, v in backbone.state_dict().items()},
                                 {k: v for k, v in model.state_dict().items() if k.startswith("mmsa.")})
        # the head keys are exactly the expected ones (nothing of the backbone left outside ``mmsa.``)
        assert matching(info["missing_keys"], {p: "" for p in self.head_only_key_patterns(tester)}) == set(info["missing_keys"])

        perturb_(model, seed=2)
        model.save_pretrained(tmp_path / "task")
        back, info = MMSAModel.from_pretrained(tmp_path / "task", output_loading_info=True)
        assert not info["missing_keys"] and not info["mismatched_keys"]
        assert not info["unexpected_keys"]  # the task heads are dropped silently (_keys_to_ignore_on_load_unexpected)
        assert_state_dicts_equal(back.state_dict(), model.mmsa.state_dict())

    def test_base_model_is_the_backbone(self, tester):
        model = tester.create_model()
        assert model.base_model is model.mmsa
        assert model.base_model_prefix == "mmsa"
