"""Configuration of MMSA (Multi-Modal molecular representation learning via Structure Awareness).

Everything beyond the paper's abstract (three views, a unified embedding, a hypergraph between molecules,
a memory bank of anchors) is a choice of this implementation; ``docs/method.md`` lists which is which.

This file is shipped as Hub remote code, so it imports only ``transformers``/``torch`` and nothing from
``mmsa_hf``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from transformers import PreTrainedConfig, ResNetConfig


try:  # transformers >= 5.x with per-key sub-config specs
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # pragma: no cover - older 5.x: a plain class mapping
    SubConfigSpec = None


# --- Copied from the batch contract (docs/batch-format.md, mmsa_hf/processing); a test checks they agree. ---
ATOM_FEATURE_VOCAB_SIZES = (119, 5, 12, 12, 10, 6, 6, 3, 3)
BOND_FEATURE_VOCAB_SIZES = (5, 7, 3)
CONFORMER_STATUSES = ("etkdg", "etkdg_random_coords", "2d_fallback", "provided", "invalid",
                      "etkdg_unoptimized", "etkdg_random_coords_unoptimized")

#: The three views, in the fixed order used by every ``[B, 3]`` modality mask.
MODALITIES = ("graph", "image", "geometry")

MEMORY_UPDATE_RULES = ("ema", "gradient")
GRAPH_JK_MODES = ("last", "sum", "concat")
POOLING_MODES = ("mean", "sum", "max")
HYPERGRAPH_CONSISTENCY_TARGETS = ("masked", "fused", "views")
MEMORY_SPACES = ("shared", "fused_ema")
RECONSTRUCTION_LOSS_TYPES = ("cosine", "mse")
DOWNSTREAM_EMBEDDINGS = ("auto", "unified", "fused", "graph")
#: Stem of the image ResNet: ResNet's own 7x7 stride-2 convolution + 3x3 stride-2 max pool, or one stride-4
#: convolution, 4x4 ("patchify") or 7x7 with padding 3 ("overlapping_patchify"); all hand the first stage S/4 x S/4.
IMAGE_STEMS = ("resnet", "patchify", "overlapping_patchify")

#: Canonical ``problem_type`` values (the transformers names) and the short aliases we accept.
PROBLEM_TYPES = ("multi_label_classification", "regression", "single_label_classification")
PROBLEM_TYPE_ALIASES = {
    "binary": "multi_label_classification",
    "multi_label": "multi_label_classification",
    "multi_task": "multi_label_classification",
    "multi_class": "single_label_classification",
}

#: ResNet-18 shape (basic blocks [2, 2, 2, 2], widths 64..512, stem width 64).
RESNET18_KWARGS = {
    "num_channels": 3,
    "embedding_size": 64,
    "hidden_sizes": [64, 128, 256, 512],
    "depths": [2, 2, 2, 2],
    "layer_type": "basic",
    "hidden_act": "relu",
    "downsample_in_first_stage": False,
}

PRESETS: dict[str, dict[str, Any]] = {
    # For unit tests: a forward+backward on a handful of molecules takes well under a second.
    "tiny": {
        "hidden_size": 32,
        "graph_num_layers": 2,
        "graph_hidden_size": 32,
        "image_config": {**RESNET18_KWARGS, "embedding_size": 8, "hidden_sizes": [8, 8, 16, 16], "depths": [1, 1, 1, 1]},
        "image_stem": "resnet",
        "geometry_num_layers": 2,
        "geometry_hidden_size": 32,
        "geometry_num_filters": 32,
        "geometry_num_rbf": 16,
        "geometry_cutoff": 5.0,
        "geometry_shared_filter_network": False,
        "fusion_num_heads": 2,
        "fusion_num_layers": 1,
        "hypergraph_k": 2,
        "hypergraph_anchor_k": 2,
        "memory_num_anchors": 8,
    },
    # For CPU runs: pretrains thousands of molecules in minutes on two cores.
    "small": {
        "hidden_size": 128,
        "graph_num_layers": 3,
        "graph_hidden_size": 128,
        "image_config": {**RESNET18_KWARGS, "embedding_size": 16, "hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1]},
        "image_stem": "resnet",
        # A 3x3 stem convolution (ResNet's is 7x7) with 112 px depictions (training.common.PRESET_IMAGE_SIZE):
        # candidate T1 of issue 10, adopted by the pre-registered held-out proxy rule
        # (benchmarks/results/speed_selection.md).
        "image_stem_kernel_size": 3,
        "geometry_num_layers": 3,
        "geometry_hidden_size": 128,
        # 64 filters within 5 Angstrom (SchNet's own sizes): the filter MLP over every atom pair was 60-68% of a
        # CPU step at 128 filters within 10 Angstrom (issue 10; benchmarks/results/pretrain_speed.md).
        "geometry_num_filters": 64,
        "geometry_num_rbf": 32,
        "geometry_cutoff": 5.0,
        "geometry_shared_filter_network": False,
        "fusion_num_heads": 4,
        "fusion_num_layers": 1,
        "hypergraph_k": 5,
        "hypergraph_anchor_k": 3,
        "memory_num_anchors": 64,
    },
    # The reference sizes: GIN 5x300, ResNet-18, SchNet-style 4x256.
    "base": {
        "hidden_size": 256,
        "graph_num_layers": 5,
        "graph_hidden_size": 300,
        "image_config": dict(RESNET18_KWARGS),
        "image_stem": "resnet",
        "geometry_num_layers": 4,
        "geometry_hidden_size": 256,
        "geometry_num_filters": 256,
        "geometry_num_rbf": 50,
        "geometry_cutoff": 10.0,
        "geometry_shared_filter_network": False,
        "fusion_num_heads": 8,
        "fusion_num_layers": 2,
        "hypergraph_k": 10,
        "hypergraph_anchor_k": 3,
        "memory_num_anchors": 256,
    },
}


class MMSAConfig(PreTrainedConfig):
    r"""Configuration of [`MMSAModel`], [`MMSAForPreTraining`] and [`MMSAForMolecularPropertyPrediction`].

    The defaults are the ``base`` preset; use [`MMSAConfig.from_preset`] for ``"tiny"`` / ``"small"`` / ``"base"``.
    Wrong values raise `ValueError` when the config is built.

    Args:
        hidden_size (`int`, defaults to 256):
            Common width ``D`` of the projected view embeddings, the fusion transformer, the hypergraph and the
            memory anchors.
        atom_feature_vocab_sizes (`list[int]`):
            Vocabulary size of each of the 9 categorical atom columns (copied from the batch contract).
        bond_feature_vocab_sizes (`list[int]`):
            Vocabulary size of each of the 3 categorical bond columns (copied from the batch contract).
        graph_num_layers (`int`, defaults to 5): GINE layers of the 2D encoder.
        graph_hidden_size (`int`, defaults to 300): width of the 2D encoder.
        graph_dropout (`float`, defaults to 0.0): dropout after every GINE layer.
        graph_jk (`str`, defaults to `"last"`): jumping knowledge over layers, one of `"last"`, `"sum"`
            (sum of the input embedding and every layer output, as in OGB) or `"concat"` (concatenate the layer
            outputs and project back to ``graph_hidden_size``).
        graph_pooling (`str`, defaults to `"mean"`): readout of the 2D encoder, `"mean"`, `"sum"` or `"max"`.
        graph_train_eps (`bool`, defaults to `False`): learn the GIN ``epsilon``.
        image_config (`dict` or `ResNetConfig`, *optional*): the `transformers.ResNetConfig` of the image encoder.
            `None` gives the ResNet-18 shape; a dict is passed to `ResNetConfig(**dict)` (so missing keys take
            `ResNetConfig`'s own defaults, as when ``config.json`` is reloaded). Saved as a nested dict.
        image_stem (`str`, defaults to `"resnet"`): the ResNet's stem. `"resnet"`: its own 7x7 stride-2
            convolution, batch norm, ReLU and 3x3 stride-2 max pool. `"patchify"`: one 4x4 stride-4 convolution,
            batch norm and ReLU (ConvNeXt's stem with ResNet's normalisation), which skips the S/2 x S/2 maps that
            cost 40 % of the small ResNet's time on a CPU. `"overlapping_patchify"`: the same with a 7x7 kernel and
            padding 3 (PVT v2's overlapping patch embedding). All hand the first stage an S/4 x S/4 map.
        image_stem_kernel_size (`int`, defaults to 7): kernel of the stem convolution with `image_stem="resnet"`
            (odd; stride 2, padding ``k // 2``; ResNet's is 7). A smaller kernel is cheaper (3: the `small`
            image encoder 155 against 175 ms a step on one CPU thread); the rest of ResNet's stem is unchanged.
        geometry_num_layers (`int`, defaults to 4): SchNet-style interaction blocks of the 3D encoder.
        geometry_hidden_size (`int`, defaults to 256): width of the 3D encoder.
        geometry_num_filters (`int`, defaults to 256): width of the continuous filters.
        geometry_num_rbf (`int`, defaults to 50): Gaussian radial basis functions on ``[0, cutoff]``.
        geometry_cutoff (`float`, defaults to 10.0): radius (Angstrom) of the within-molecule radius graph.
        geometry_shared_filter_network (`bool`, defaults to `False`): one continuous-filter network for every
            interaction block (the filters are computed once per forward) instead of one per block as in SchNet.
        geometry_pooling (`str`, defaults to `"mean"`): readout of the 3D encoder, `"mean"`, `"sum"` or `"max"`.
        geometry_use_atom_features (`bool`, defaults to `False`): add the 9 categorical 2D atom features to the
            atomic-number embedding of the 3D encoder (off: the 3D view sees only Z and positions).
        geometry_missing_statuses (`list[str]`, defaults to `[]`): conformer statuses (from the contract's
            ``CONFORMER_STATUSES``) for which the 3D view counts as missing. Empty by default: ``conformer_status``
            is then ignored, as the batch contract says.
        fusion_num_heads (`int`, defaults to 8), fusion_num_layers (`int`, defaults to 2),
        fusion_intermediate_size (`int`, *optional*, defaults to ``2 * hidden_size``),
        fusion_dropout (`float`, defaults to 0.0): the fusion transformer over ``[FUSE] + view tokens``.
        use_image (`bool`), use_geometry (`bool`), use_hypergraph (`bool`), use_memory (`bool`):
            switch the image view, the 3D view, the structure-awareness hypergraph and the memory bank on or off.
            A disabled encoder is not built (its weights do not exist).
        modality_dropout (`float`, defaults to 0.0): in training, drop each present view of a molecule with this
            probability (at least one view is always kept).
        hypergraph_k (`int`, defaults to 10): nearest molecules per view hyperedge (training mode).
        hypergraph_anchor_k (`int`, defaults to 3): nearest memory anchors in each molecule's anchor hyperedge.
        hypergraph_num_layers (`int`, defaults to 2): `HypergraphConv` layers (each with a residual connection).
        hypergraph_dropout (`float`, defaults to 0.0).
        hypergraph_consistency_target (`str`, defaults to `"masked"`): the hypergraph consistency loss.
            `"masked"`: a random ``hypergraph_mask_ratio`` of the molecules enter the hypergraph as a learned mask
            token, and their refined embedding must identify their own (stop-gradient) fused embedding among the
            batch by InfoNCE, from their hypergraph neighbours alone. `"fused"`: InfoNCE between the refined and the
            fused embedding (solved trivially by the residual; kept for ablation). `"views"`: mean of InfoNCE
            against each present view embedding.
        hypergraph_mask_ratio (`float`, defaults to 0.5): share of molecules masked by the `"masked"` target.
        memory_num_anchors (`int`, defaults to 256): anchors ``K`` in the memory bank.
        memory_temperature (`float`, defaults to 0.1): ``tau_m`` of the soft assignment softmax.
        memory_update_rule (`str`, defaults to `"ema"`): `"ema"` (EMA of the assigned embeddings, no gradients)
            or `"gradient"` (the anchors are trained by back-propagation).
        memory_ema_momentum (`float`, defaults to 0.99).
        memory_sinkhorn_iterations (`int`, defaults to 3): Sinkhorn-Knopp iterations of the swapped-prediction
            targets (0: plain sharpened softmax targets).
        memory_target_temperature (`float`, defaults to 0.05): temperature (Sinkhorn epsilon) of the targets.
        memory_space (`str`, defaults to `"shared"`): which embeddings the memory scores and learns from.
            `"shared"`: the fused embedding and every present view embedding are scored against the anchors, take
            part in the swapped prediction, and update the anchors (one space for scoring and updating).
            `"fused_ema"`: the first implementation, anchors EMA-updated from the fused embedding while the swap
            scores only the view embeddings (kept for ablation).
        contrastive_temperature (`float`, defaults to 0.1): InfoNCE temperature.
        contrastive_weight, reconstruction_weight, hypergraph_weight, memory_weight (`float`): loss weights
            (defaults 1.0, 1.0, 0.5, 0.5).
        reconstruction_loss_type (`str`, defaults to `"cosine"`): `"cosine"` (1 - cos) or `"mse"`, to the
            stop-gradient target view embedding.
        masked_atom_ratio (`float`, defaults to 0.15): node-level term on the 2D encoder (Hu et al. 2020): in
            pretraining, this share of each molecule's atoms (at least one) enter the GIN as a learned mask
            embedding, and the bonds touching them as learned per-layer mask embeddings. 0 switches it off.
        masked_attribute_weight (`float`, defaults to 1.0): weight of the masked attribute loss (cross-entropy
            on all 9 atom columns of the masked atoms and, with ``masked_bond_prediction``, on the 3 bond
            columns of the masked bonds).
        masked_bond_prediction (`bool`, defaults to `True`): also predict the masked bonds' attributes.
        num_descriptors (`int`, defaults to 0): molecule-level term on the 2D encoder (our addition): regress this
            many normalised RDKit descriptors (``mmsa_hf.data.descriptors``) from the pooled GIN output. 0 (no
            head) switches it off; ``scripts/pretrain.py --descriptor_targets`` sets it from the RDKit version.
        descriptor_weight (`float`, defaults to 10.0): weight of the descriptor loss (masked MSE in ``[0, 1]``,
            whose chance level is 1/12; x10 puts it on the scale of the cross-entropy terms).
        num_fingerprint_bits (`int`, defaults to 0): molecule-level term on the 2D encoder (our addition): predict
            the folded Morgan fingerprint (``fingerprint_radius``, this many bits; ``mmsa_hf.data.fingerprints``)
            of each molecule from the pooled GIN output, as multi-label BCE. 0 (no head) switches it off;
            ``scripts/pretrain.py --fingerprint_targets`` sets 2048.
        fingerprint_radius (`int`, defaults to 2): Morgan radius of the targets (2 = ECFP4). Stored so a continued
            run computes the same bits.
        fingerprint_weight (`float`, defaults to 10.0): weight of the fingerprint loss (BCE averaged over every
            bit; most bits are off, so the per-bit mean is small and x10 puts it beside the other terms).
        assay_tasks (`list[str]`, defaults to `[]`): molecule-level term on the 2D encoder (our addition, after Hu
            et al. 2020's supervised pretraining): predict each molecule's measured outcome in these binary assays
            (``"set/column"`` names, ``mmsa_hf.data.assays``) from the pooled GIN output, as BCE over the measured
            entries. Empty (no head) switches it off; ``scripts/pretrain.py --assay_targets`` sets the 535 tasks of
            ToxCast (without ``TOX21_*``), HIV and MUV.
        assay_weight (`float`, defaults to 5.0): weight of the assay loss (BCE averaged over the measured entries).
        downstream_modalities (`list[str]`, *optional*): views used by [`MMSAForMolecularPropertyPrediction`];
            `None` (default) means every enabled view; `["graph"]` alone is the GraphMVP-style protocol. Naming a
            disabled view raises.
        downstream_embedding (`str`, defaults to `"auto"`): what the property head reads: `"graph"` (the pooled
            2D encoder output), `"fused"` (fusion output), `"unified"` (fusion + anchor hypergraph) or `"auto"`
            (`"graph"` when ``downstream_modalities == ["graph"]``, else `"unified"`).
        num_labels (`int`), problem_type (`str`): the property task. ``problem_type`` takes the transformers names
            `"multi_label_classification"` (binary / multi-task binary, BCE with NaN labels masked),
            `"single_label_classification"` (multi-class, cross-entropy) and `"regression"` (MSE on normalised
            labels), or the aliases `"binary"`, `"multi_label"`, `"multi_task"`, `"multi_class"`.

            .. warning:: **`None` means `"multi_label_classification"`, even with `num_labels=1`.** transformers'
               sequence-classification models treat `problem_type=None` with `num_labels=1` as *regression*; here
               a single unlabelled task is a binary endpoint (MoleculeNet's common case). Set
               `problem_type="regression"` for a regression task (``mmsa finetune --task_type regression`` does).
        label_mean (`list[float]`, *optional*), label_std (`list[float]`, *optional*): regression label
            normalisation; the model regresses ``(y - mean) / std`` and de-normalises its predictions.
        classifier_dropout (`float`, defaults to 0.0), classifier_hidden_size (`int`, *optional*): property head,
            linear when ``classifier_hidden_size`` is None, else a 2-layer MLP.
        initializer_range (`float`, defaults to 0.02): std of the normal init of tokens and type embeddings.
    """

    model_type = "mmsa"
    if SubConfigSpec is not None:
        sub_configs_defaults = {"image_config": SubConfigSpec(config_class=ResNetConfig, init_kwargs=RESNET18_KWARGS)}
    else:  # pragma: no cover
        sub_configs = {"image_config": ResNetConfig}

    hidden_size: int = 256
    atom_feature_vocab_sizes: list[int] | tuple[int, ...] = ATOM_FEATURE_VOCAB_SIZES
    bond_feature_vocab_sizes: list[int] | tuple[int, ...] = BOND_FEATURE_VOCAB_SIZES

    graph_num_layers: int = 5
    graph_hidden_size: int = 300
    graph_dropout: float = 0.0
    graph_jk: str = "last"
    graph_pooling: str = "mean"
    graph_train_eps: bool = False

    image_config: dict | PreTrainedConfig | None = None
    image_stem: str = "resnet"
    image_stem_kernel_size: int = 7

    geometry_num_layers: int = 4
    geometry_hidden_size: int = 256
    geometry_num_filters: int = 256
    geometry_num_rbf: int = 50
    geometry_cutoff: float = 10.0
    geometry_shared_filter_network: bool = False
    geometry_pooling: str = "mean"
    geometry_use_atom_features: bool = False
    geometry_missing_statuses: list[str] | tuple[str, ...] = ()

    fusion_num_heads: int = 8
    fusion_num_layers: int = 2
    fusion_intermediate_size: int | None = None
    fusion_dropout: float = 0.0

    use_image: bool = True
    use_geometry: bool = True
    use_hypergraph: bool = True
    use_memory: bool = True
    modality_dropout: float = 0.0

    hypergraph_k: int = 10
    hypergraph_anchor_k: int = 3
    hypergraph_num_layers: int = 2
    hypergraph_dropout: float = 0.0
    hypergraph_consistency_target: str = "masked"
    hypergraph_mask_ratio: float = 0.5

    memory_num_anchors: int = 256
    memory_temperature: float = 0.1
    memory_update_rule: str = "ema"
    memory_ema_momentum: float = 0.99
    memory_sinkhorn_iterations: int = 3
    memory_target_temperature: float = 0.05
    memory_space: str = "shared"

    contrastive_temperature: float = 0.1
    contrastive_weight: float = 1.0
    reconstruction_weight: float = 1.0
    reconstruction_loss_type: str = "cosine"
    hypergraph_weight: float = 0.5
    memory_weight: float = 0.5
    masked_atom_ratio: float = 0.15
    masked_attribute_weight: float = 1.0
    masked_bond_prediction: bool = True
    num_descriptors: int = 0
    descriptor_weight: float = 10.0
    num_fingerprint_bits: int = 0
    fingerprint_radius: int = 2
    fingerprint_weight: float = 10.0
    assay_tasks: list[str] | tuple[str, ...] = ()
    assay_weight: float = 5.0

    downstream_modalities: list[str] | tuple[str, ...] | None = None
    downstream_embedding: str = "auto"
    label_mean: list[float] | None = None
    label_std: list[float] | None = None
    classifier_dropout: float = 0.0
    classifier_hidden_size: int | None = None

    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        self._normalize_fields()
        # Build the ResNet sub-config here (not only through the sub-config machinery) so that the behaviour does
        # not depend on the transformers 5.x minor version: None -> ResNet-18, dict -> ResNetConfig(**dict).
        if self.image_config is None:
            self.image_config = ResNetConfig(**RESNET18_KWARGS)
        elif isinstance(self.image_config, dict):
            self.image_config = ResNetConfig(**self.image_config)
        super().__post_init__(**kwargs)
        self._validate_mmsa()

    def _normalize_fields(self) -> None:
        """Lists instead of tuples (JSON round trip), problem-type aliases to the transformers names."""
        if self.downstream_modalities is None:
            self.downstream_modalities = self.enabled_modalities
        for name in (
            "atom_feature_vocab_sizes",
            "bond_feature_vocab_sizes",
            "geometry_missing_statuses",
            "downstream_modalities",
            "assay_tasks",
        ):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [value]
            setattr(self, name, list(value) if value is not None else value)
        for name in ("label_mean", "label_std"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, (int, float)):
                    value = [value]
                setattr(self, name, [float(v) for v in value])
        if self.problem_type in PROBLEM_TYPE_ALIASES:
            self.problem_type = PROBLEM_TYPE_ALIASES[self.problem_type]

    # ------------------------------------------------------------------ validation
    def _validate_mmsa(self) -> None:
        """Raise `ValueError` on the first invalid MMSA field. Also run by the models' ``__init__``, because
        ``from_pretrained(..., some_field=value)`` sets attributes after ``__post_init__``."""
        self._normalize_fields()
        for check in (_value_errors, _feature_errors, _downstream_errors, _task_errors):
            for message in check(self):
                raise ValueError(f"MMSAConfig: {message}")

    # ------------------------------------------------------------------ helpers
    @property
    def enabled_modalities(self) -> list[str]:
        """Views whose encoder is built, in the fixed order `("graph", "image", "geometry")`."""
        return [m for m, on in zip(MODALITIES, (True, self.use_image, self.use_geometry)) if on]

    @property
    def num_assay_tasks(self) -> int:
        """Width of the assay head (``len(assay_tasks)``; 0: no assay term)."""
        return len(self.assay_tasks)

    @property
    def resolved_problem_type(self) -> str:
        """``problem_type`` with `None` resolved to `"multi_label_classification"` (MoleculeNet's default)."""
        problem = PROBLEM_TYPE_ALIASES.get(self.problem_type, self.problem_type)
        return problem or "multi_label_classification"

    @property
    def resolved_downstream_embedding(self) -> str:
        if self.downstream_embedding != "auto":
            return self.downstream_embedding
        return "graph" if list(self.downstream_modalities) == ["graph"] else "unified"

    def set_label_statistics(self, mean, std) -> None:
        """Store the regression label normalisation (one value per label, e.g. training-split nanmean/nanstd).

        A std of 0 (a constant label) is replaced by 1."""
        mean = [float(m) for m in (mean if hasattr(mean, "__len__") else [mean])]
        std = [float(s) if float(s) > 0 else 1.0 for s in (std if hasattr(std, "__len__") else [std])]
        if len(mean) != self.num_labels or len(std) != self.num_labels:
            raise ValueError(f"MMSAConfig: label statistics need {self.num_labels} values, got {len(mean)} / {len(std)}.")
        self.label_mean, self.label_std = mean, std
        self._validate_mmsa()

    @classmethod
    def from_preset(cls, name: str = "base", **overrides) -> "MMSAConfig":
        """Build a config from a named preset (``"tiny"``, ``"small"`` or ``"base"``) plus keyword overrides.

        ``image_config`` given as a dict in ``overrides`` is merged key by key into the preset's ResNet config.

        Example::

            config = MMSAConfig.from_preset("small", use_geometry=False, memory_num_anchors=32)
        """
        if name not in PRESETS:
            raise ValueError(f"MMSAConfig: unknown preset {name!r}; known presets: {list(PRESETS)}.")
        kwargs = copy.deepcopy(PRESETS[name])
        image_override = overrides.pop("image_config", None)
        if isinstance(image_override, dict):
            kwargs["image_config"] = {**kwargs["image_config"], **image_override}
        elif image_override is not None:
            kwargs["image_config"] = image_override
        kwargs.update(overrides)
        return cls(**kwargs)


MMSAConfig.register_for_auto_class()


# ---------------------------------------------------------------------------------------------- validation
#: integer fields and their minimum
INTEGER_FIELDS = {
    **dict.fromkeys(("hidden_size", "graph_num_layers", "graph_hidden_size", "geometry_num_layers",
                     "geometry_hidden_size", "geometry_num_filters", "fusion_num_heads", "fusion_num_layers",
                     "hypergraph_k", "hypergraph_anchor_k", "hypergraph_num_layers", "memory_num_anchors"), 1),
    "geometry_num_rbf": 2, "memory_sinkhorn_iterations": 0, "num_descriptors": 0,
    "num_fingerprint_bits": 0, "fingerprint_radius": 0,
}
OPTIONAL_INTEGER_FIELDS = ("fusion_intermediate_size", "classifier_hidden_size")
PROBABILITY_FIELDS = ("graph_dropout", "fusion_dropout", "hypergraph_dropout", "classifier_dropout",
                      "modality_dropout", "masked_atom_ratio", "hypergraph_mask_ratio")
POSITIVE_FLOAT_FIELDS = ("geometry_cutoff", "memory_temperature", "memory_target_temperature",
                         "contrastive_temperature")
LOSS_WEIGHT_FIELDS = ("contrastive_weight", "reconstruction_weight", "hypergraph_weight", "memory_weight",
                      "masked_attribute_weight", "descriptor_weight", "fingerprint_weight", "assay_weight")
CHOICE_FIELDS = {
    "graph_jk": GRAPH_JK_MODES, "graph_pooling": POOLING_MODES, "geometry_pooling": POOLING_MODES,
    "memory_update_rule": MEMORY_UPDATE_RULES, "hypergraph_consistency_target": HYPERGRAPH_CONSISTENCY_TARGETS,
    "memory_space": MEMORY_SPACES, "reconstruction_loss_type": RECONSTRUCTION_LOSS_TYPES,
    "downstream_embedding": DOWNSTREAM_EMBEDDINGS, "image_stem": IMAGE_STEMS,
}


def _is_integer(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _value_errors(config):
    """Field-by-field ranges: sizes, probabilities, temperatures, loss weights, choices."""
    optional = {name: 1 for name in OPTIONAL_INTEGER_FIELDS if getattr(config, name) is not None}
    for name, minimum in {**INTEGER_FIELDS, **optional}.items():
        if not _is_integer(getattr(config, name), minimum):
            yield f"`{name}` must be an integer >= {minimum}, got {getattr(config, name)!r}."
    if config.hidden_size % config.fusion_num_heads != 0:
        yield f"`hidden_size` ({config.hidden_size}) must be divisible by `fusion_num_heads` ({config.fusion_num_heads})."
    for name in PROBABILITY_FIELDS:
        if not (isinstance(getattr(config, name), (int, float)) and 0.0 <= getattr(config, name) < 1.0):
            yield f"`{name}` must be in [0, 1), got {getattr(config, name)!r}."
    for name in POSITIVE_FLOAT_FIELDS:
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and value > 0 and not math.isinf(value)):
            yield f"`{name}` must be a finite number > 0, got {value!r}."
    if not isinstance(config.initializer_range, (int, float)) or config.initializer_range < 0:
        yield f"`initializer_range` must be >= 0, got {config.initializer_range!r}."
    for name in LOSS_WEIGHT_FIELDS:
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and value >= 0 and not math.isinf(value)):
            yield f"loss weight `{name}` must be a finite number >= 0, got {value!r}."
    if not 0.0 <= config.memory_ema_momentum < 1.0:
        yield f"`memory_ema_momentum` must be in [0, 1), got {config.memory_ema_momentum!r}."
    for name, options in CHOICE_FIELDS.items():
        if getattr(config, name) not in options:
            yield f"`{name}` must be one of {list(options)}, got {getattr(config, name)!r}."
    if not all(isinstance(t, str) and "/" in t for t in config.assay_tasks):
        yield f"`assay_tasks` must be 'set/column' names, got {list(config.assay_tasks)[:5]!r}..."
    if not isinstance(config.geometry_shared_filter_network, bool):
        yield f"`geometry_shared_filter_network` must be a bool, got {config.geometry_shared_filter_network!r}."
    yield from _image_stem_kernel_errors(config)


def _feature_errors(config):
    """The categorical vocabularies of the batch contract and the conformer statuses."""
    for name, reference in (("atom_feature_vocab_sizes", ATOM_FEATURE_VOCAB_SIZES),
                            ("bond_feature_vocab_sizes", BOND_FEATURE_VOCAB_SIZES)):
        sizes = getattr(config, name)
        if len(sizes) != len(reference) or not all(_is_integer(v, 1) for v in sizes):
            yield f"`{name}` must be {len(reference)} positive integers, got {sizes!r}."
    for status in config.geometry_missing_statuses:
        if status not in CONFORMER_STATUSES:
            yield f"unknown conformer status {status!r} in `geometry_missing_statuses`; known: {list(CONFORMER_STATUSES)}."


def _downstream_errors(config):
    """The views the property model reads, and the anchors the hypergraph links to."""
    if not config.downstream_modalities:
        yield "`downstream_modalities` must name at least one modality."
    enabled = config.enabled_modalities
    for modality in config.downstream_modalities or ():
        if modality not in MODALITIES:
            yield f"unknown modality {modality!r} in `downstream_modalities`; known: {list(MODALITIES)}."
        if modality not in enabled:
            yield (f"downstream modality {modality!r} is not enabled (enabled: {list(enabled)}); "
                   f"set use_{modality}=True or drop it.")
    if len(set(config.downstream_modalities or ())) != len(config.downstream_modalities or ()):
        yield f"`downstream_modalities` has duplicates: {config.downstream_modalities!r}."
    if config.use_memory and config.hypergraph_anchor_k > config.memory_num_anchors:
        yield (f"`hypergraph_anchor_k` ({config.hypergraph_anchor_k}) cannot exceed `memory_num_anchors` "
               f"({config.memory_num_anchors}).")


def _task_errors(config):
    """The property task (problem type, label statistics) and the image encoder's input."""
    if config.problem_type is not None and config.problem_type not in PROBLEM_TYPES:
        yield (f"unknown `problem_type` {config.problem_type!r}; use one of {list(PROBLEM_TYPES)} or an alias "
               f"{list(PROBLEM_TYPE_ALIASES)}.")
    for name in ("label_mean", "label_std"):
        value = getattr(config, name)
        if value is not None and len(value) != config.num_labels:
            yield f"`{name}` has {len(value)} entries but `num_labels` is {config.num_labels}."
    if config.label_std is not None and any(not s > 0 or math.isinf(s) for s in config.label_std):
        yield f"`label_std` must be finite and > 0, got {config.label_std!r}."
    image = config.image_config
    if image is not None and getattr(image, "num_channels", 3) != 3:
        yield "the image encoder expects RGB depictions: `image_config.num_channels` must be 3."


def _image_stem_kernel_errors(config):
    kernel = config.image_stem_kernel_size
    if not (_is_integer(kernel, 1) and kernel % 2 == 1):
        yield f"`image_stem_kernel_size` must be an odd integer >= 1, got {kernel!r}."
    elif kernel != 7 and config.image_stem != "resnet":
        yield (f"`image_stem_kernel_size` ({kernel}) applies to `image_stem=\"resnet\"` only; the "
               f"{config.image_stem!r} stem has its own kernel.")


__all__ = [
    "ATOM_FEATURE_VOCAB_SIZES",
    "BOND_FEATURE_VOCAB_SIZES",
    "CONFORMER_STATUSES",
    "MODALITIES",
    "PRESETS",
    "MMSAConfig",
]
