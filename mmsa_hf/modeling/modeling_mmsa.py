"""MMSA models: the multi-modal backbone, the pretraining model and the property-prediction model.

The forward of every model takes exactly the keys of the processor's batch (``docs/batch-format.md``):
``model(**processor(smiles))``. ``smiles``, ``input_indices`` and ``conformer_status`` are accepted and ignored
(``conformer_status`` is read only when ``config.geometry_missing_statuses`` is non-empty).

Placeholder rows (``valid_mask`` False) are removed *before* any encoder runs, so they cannot leak into batch
statistics (BatchNorm), the hypergraph, the losses or the memory update; their output rows are zero.
"""

from __future__ import annotations

import logging
import math
import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GINEConv, HypergraphConv
from torch_geometric.nn.dense.linear import Linear as PyGLinear
from transformers import PreTrainedModel
from transformers import initialization as init

from .configuration_mmsa import CONFORMER_STATUSES, MODALITIES, MMSAConfig
from .encoder_geometry import MMSAGaussianRBF, MMSAGeometryEncoder
from .encoder_graph import MMSAGraphEncoder
from .encoder_image import MMSAImageEncoder
from .fusion import MMSAFusion
from .heads import MMSAProjectionHead, MMSAPropertyHead, MMSAReconstructionHead
from .hypergraph import MMSAHypergraph
from .losses import (
    cross_modal_reconstruction_loss,
    hypergraph_consistency_loss,
    inter_modal_contrastive_loss,
    masked_bce_with_logits,
    masked_hypergraph_loss,
    masked_normalized_mse,
    memory_alignment_loss,
    multiclass_cross_entropy,
)
from .checksums import verify_directory, write_manifest
from .descriptor_head import MMSADescriptorHead, descriptor_loss
from .assay_head import MMSAAssayHead
from .fingerprint_head import MMSAFingerprintHead, fingerprint_loss
from .masked_attributes import MMSAMaskedAttributeHead, masked_attribute_loss, sample_masked_atoms
from .memory import MMSAMemoryBank
from .outputs import MMSAModelOutput, MMSAPretrainingOutput, MMSAPropertyPredictionOutput
from .valid_rows import ValidRows, _scatter_rows, select_valid_rows


#: ``auto_map`` written into every saved config, whichever MMSA class saves it (Hub remote code).
AUTO_MAP = {
    "AutoConfig": "configuration_mmsa.MMSAConfig",
    "AutoModel": "modeling_mmsa.MMSAModel",
    "AutoModelForPreTraining": "modeling_mmsa.MMSAForPreTraining",
    "AutoModelForSequenceClassification": "modeling_mmsa.MMSAForMolecularPropertyPrediction",
}


class MMSAPreTrainedModel(PreTrainedModel):
    """Base class: config class, weight initialisation (through ``transformers.initialization`` only, so that
    ``from_pretrained`` never overwrites loaded tensors) and a ``save_pretrained`` that writes the full
    ``auto_map`` and ``checksums.json`` (the sha256 of every weight file, see ``checksums.py``)."""

    config_class = MMSAConfig
    base_model_prefix = "mmsa"
    main_input_name = "atom_features"
    supports_gradient_checkpointing = False
    _no_split_modules = []

    def __init__(self, config: MMSAConfig, *inputs, **kwargs):
        # `from_pretrained(path, field=value)` sets config attributes after the config's own validation.
        config._validate_mmsa()
        super().__init__(config, *inputs, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, PyGLinear)):
            # PyTorch's default Linear init (what GIN / SchNet reference code uses).
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight.shape[1]
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.Embedding):
            init.xavier_uniform_(module.weight)  # as OGB's AtomEncoder / BondEncoder
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
            if module.running_mean is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, GINEConv):
            init.constant_(module.eps, module.initial_eps)
        elif isinstance(module, HypergraphConv):
            if module.bias is not None:
                init.zeros_(module.bias)
            if getattr(module, "att", None) is not None:
                init.xavier_uniform_(module.att)
        elif isinstance(module, MMSAGaussianRBF):
            init.copy_(module.offset, module.reference_offset())
        elif isinstance(module, MMSAFusion):
            init.normal_(module.fuse_token, mean=0.0, std=std)
            init.normal_(module.modality_embeddings.weight, mean=0.0, std=std)
        elif isinstance(module, MMSAForPreTraining) and module.hypergraph_mask_token is not None:
            init.normal_(module.hypergraph_mask_token, mean=0.0, std=std)
        elif isinstance(module, MMSAGraphEncoder):
            init.normal_(module.atom_mask_embedding, mean=0.0, std=std)
            init.normal_(module.bond_mask_embeddings, mean=0.0, std=std)
        elif isinstance(module, MMSAMemoryBank):
            init.copy_(module.anchors, F.normalize(torch.randn(module.anchors.shape), dim=-1))

    def enabled_views(self) -> list[str]:
        """The views whose encoder exists, in the fixed order ("graph", "image", "geometry")."""
        return list(self.config.enabled_modalities)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        # a local checkpoint (AutoModel, pipelines) is checked against its checksums.json first; a damaged weight
        # file raises an OSError naming it. Without a manifest: a one-line notice, then the usual load.
        if pretrained_model_name_or_path is not None and os.path.isdir(pretrained_model_name_or_path):
            verify_directory(pretrained_model_name_or_path, notice=logging.getLogger(__name__).warning)
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True gives (model, info)
        for module in model.modules():
            if isinstance(module, MMSAMemoryBank):
                module.restore_update_rule_flag()
        return loaded

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained``, then ``checksums.json``. For a class registered for an Auto class
        (all MMSA models, at import) the config gets the whole :data:`AUTO_MAP`: transformers alone writes only the
        saving class's entry, and ``AutoModel`` / ``AutoModelForPreTraining`` / ``AutoModelForSequenceClassification``
        should all load the checkpoint as remote code, whichever class saved it."""
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.update(AUTO_MAP)
            self.config.auto_map = auto_map
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_manifest(save_directory)  # checksums.json: sha256 of every weight file, checked when loading
        return result


def _num_molecules(batch, ptr, valid_mask, pixel_values) -> int:
    if ptr is not None:
        return int(ptr.numel()) - 1
    if valid_mask is not None:
        return int(valid_mask.numel())
    if pixel_values is not None:
        return int(pixel_values.size(0))
    return int(batch.max()) + 1 if batch.numel() else 0


def _check_views_in_batch(model, modalities, pixel_values, pos, atomic_numbers) -> None:
    """Raise a ``ValueError`` naming the view when ``model`` reads the image / geometry view (its encoder exists
    and ``modalities`` allows it) but the batch lacks its inputs: a missing view is never filled with zeros."""
    allowed = MODALITIES if modalities is None else modalities
    needed = {
        "image": (model.image_encoder, {"pixel_values": pixel_values}),
        "geometry": (model.geometry_encoder, {"pos": pos, "atomic_numbers": atomic_numbers}),
    }
    for view, (encoder, inputs) in needed.items():
        missing = [key for key, value in inputs.items() if value is None]
        if encoder is not None and view in allowed and missing:
            raise ValueError(
                f"{type(model).__name__} reads the {view!r} view but the batch has no {', '.join(missing)}: "
                f"featurize with a processor whose views include {view!r} (views_for_config(config)), or pass "
                f"modalities without {view!r} to run without it"
            )


#: position of each view in ``modality_mask`` / the fusion tokens
VIEW_INDEX = {view: position for position, view in enumerate(MODALITIES)}


class MMSAModel(MMSAPreTrainedModel):
    r"""The MMSA backbone: three view encoders, projection to a common width, attention fusion, the memory bank
    and the structure-awareness hypergraph.

    .. math::
        \mathbf{z}_v = \mathrm{Proj}_v(\mathrm{Enc}_v(x_v)), \quad
        \mathbf{u} = \mathrm{Fuse}(\{\mathbf{z}_v\}_{v \text{ present}}), \quad
        \mathbf{p} = \mathrm{softmax}(\hat{\mathbf{u}}\hat{\mathbf{M}}^\top/\tau_m), \quad
        \tilde{\mathbf{u}} = \mathrm{HGNN}(\mathbf{u};\ \text{batch kNN + anchors})

    In training mode the hypergraph links each molecule to its nearest batch neighbours (per view) and to its
    nearest anchors; in eval mode only to its anchors, so embeddings do not depend on the rest of the batch.
    """

    # A backbone loaded from a task checkpoint drops the task heads silently.
    _keys_to_ignore_on_load_unexpected = [
        r"reconstruction_heads\.", r"attribute_head\.", r"hypergraph_mask_token", r"classifier\."
    ]

    def __init__(self, config: MMSAConfig):
        super().__init__(config)
        self.graph_encoder = MMSAGraphEncoder(config)
        self.image_encoder = MMSAImageEncoder(config) if config.use_image else None
        self.geometry_encoder = MMSAGeometryEncoder(config) if config.use_geometry else None
        sizes = {"graph": self.graph_encoder.output_size}
        if self.image_encoder is not None:
            sizes["image"] = self.image_encoder.output_size
        if self.geometry_encoder is not None:
            sizes["geometry"] = self.geometry_encoder.output_size
        self.projections = nn.ModuleDict({m: MMSAProjectionHead(s, config.hidden_size) for m, s in sizes.items()})
        self.fusion = MMSAFusion(config)
        self.memory = MMSAMemoryBank(config) if config.use_memory else None
        self.hypergraph = MMSAHypergraph(config) if config.use_hypergraph else None
        self.post_init()

    # ------------------------------------------------------------------ helpers
    def _present_modalities(self, rows: ValidRows, modalities) -> torch.Tensor:
        """Bool ``[n, 3]``: which views (graph, image, geometry) each valid molecule enters the fusion with —
        enabled, allowed by ``modalities``, provided, not a failed conformer (``geometry_missing_statuses``), in
        ``modality_mask``, and surviving modality dropout in training."""
        inputs, n, device = rows.inputs, rows.num_molecules, rows.ptr.device
        pixel_values, pos, atomic_numbers = inputs["pixel_values"], inputs["pos"], inputs["atomic_numbers"]
        conformer_status, modality_mask = inputs["conformer_status"], inputs["modality_mask"]
        allowed = set(MODALITIES if modalities is None else modalities)
        unknown = allowed - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; known: {list(MODALITIES)}")
        graph_on = "graph" in allowed
        image_on = self.image_encoder is not None and "image" in allowed and pixel_values is not None
        geometry_on = (
            self.geometry_encoder is not None and "geometry" in allowed and pos is not None and atomic_numbers is not None
        )
        present = torch.tensor([graph_on, image_on, geometry_on], device=device).expand(n, 3).clone()
        if geometry_on and self.config.geometry_missing_statuses and conformer_status is not None:
            missing_ids = [CONFORMER_STATUSES.index(s) for s in self.config.geometry_missing_statuses]
            missing = torch.isin(conformer_status.to(device), torch.tensor(missing_ids, device=device))
            present[:, VIEW_INDEX["geometry"]] &= ~missing
        if modality_mask is not None:
            present &= modality_mask.to(device=device, dtype=torch.bool)
        if self.training and self.config.modality_dropout > 0 and n > 0:
            keep = torch.rand(n, 3, device=device) >= self.config.modality_dropout
            dropped = present & keep
            empty = ~dropped.any(dim=1) & present.any(dim=1)
            if bool(empty.any()):
                choice = (torch.rand(n, 3, device=device) * present).argmax(dim=1)
                dropped[empty, choice[empty]] = True
            present = dropped
        return present

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        atom_features: torch.LongTensor,
        bond_features: torch.LongTensor,
        edge_index: torch.LongTensor,
        batch: torch.LongTensor,
        ptr: torch.LongTensor | None = None,
        atomic_numbers: torch.LongTensor | None = None,
        pos: torch.FloatTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        valid_mask: torch.BoolTensor | None = None,
        conformer_status: torch.LongTensor | None = None,
        input_indices: torch.LongTensor | None = None,
        smiles: list[str] | None = None,
        modality_mask: torch.BoolTensor | None = None,
        modalities: list[str] | tuple[str, ...] | None = None,
        masked_atoms: torch.BoolTensor | None = None,
        hypergraph_mode: str | None = None,
        encoders_only: bool = False,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> MMSAModelOutput | tuple:
        r"""
        Args:
            atom_features, bond_features, edge_index, batch, ptr, atomic_numbers, pos, pixel_values, valid_mask:
                the batch contract (``docs/batch-format.md``). ``atomic_numbers``/``pos`` may be None (no 3D view),
                ``pixel_values`` may be None (no image view).
            conformer_status, input_indices, smiles: accepted and ignored (see ``geometry_missing_statuses``).
            modality_mask (`torch.BoolTensor` of shape `(B, 3)`, *optional*): extra per-molecule view mask
                (graph, image, geometry), AND-ed with what is enabled and provided.
            modalities (`list[str]`, *optional*): run only these views (e.g. ``config.downstream_modalities``).
            masked_atoms (`torch.BoolTensor` of shape `(N,)`, *optional*): atoms whose attributes the GIN does not
                see (masked attribute pretraining; see [`MMSAGraphEncoder`]).
            hypergraph_mode (`str`, *optional*): ``"batch"`` or ``"anchors"``; default ``"batch"`` in training and
                ``"anchors"`` in eval.
            encoders_only (`bool`): skip projection, fusion, memory and hypergraph (only the encoder outputs are
                filled).
            output_attentions (`bool`, *optional*): return the fusion attention weights.
        """
        _check_views_in_batch(self, modalities, pixel_values, pos, atomic_numbers)
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        num_molecules = _num_molecules(batch, ptr, valid_mask, pixel_values)
        if valid_mask is None:
            valid_mask = torch.ones(num_molecules, dtype=torch.bool, device=atom_features.device)
        valid_mask = valid_mask.to(device=atom_features.device, dtype=torch.bool)
        rows = select_valid_rows(
            {"atom_features": atom_features, "bond_features": bond_features, "edge_index": edge_index,
             "batch": batch, "atomic_numbers": atomic_numbers, "pos": pos, "pixel_values": pixel_values,
             "conformer_status": conformer_status, "modality_mask": modality_mask, "masked_atoms": masked_atoms},
            valid_mask,
        )
        present = self._present_modalities(rows, modalities)
        pooled, atom_embeddings, geometry_atoms = self._encode_views(rows, present)
        result = {
            "graph_pooled_output": rows.molecules_to_batch(pooled["graph"]),
            "image_pooled_output": rows.molecules_to_batch(pooled.get("image")),
            "geometry_pooled_output": rows.molecules_to_batch(pooled.get("geometry")),
            "atom_embeddings": rows.atoms_to_batch(atom_embeddings),
            "geometry_atom_embeddings": rows.atoms_to_batch(geometry_atoms),
            "modality_mask": rows.molecules_to_batch(present),
            "valid_mask": valid_mask,
        }
        if not encoders_only:
            view_embeddings, tokens, fused, attentions = self._fuse_views(pooled, present, output_attentions)
            assignments, unified = self._refine(fused, tokens, present, hypergraph_mode)
            for view, z in view_embeddings.items():
                result[f"{view}_embedding"] = rows.molecules_to_batch(z)
            result.update(
                fused_embedding=rows.molecules_to_batch(fused),
                unified_embedding=rows.molecules_to_batch(unified),
                anchor_assignments=rows.molecules_to_batch(assignments),
                attentions=tuple(rows.molecules_to_batch(a) for a in attentions) if attentions is not None else None,
            )
        output = MMSAModelOutput(**result)
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------------ forward steps
    def _encode_views(self, rows: ValidRows, present: torch.Tensor):
        """Pooled output of every view that runs (``{view: [n, F_view]}``), the GIN atom embeddings ``[N_v, F]`` and
        the 3D atom embeddings (or None). A view no molecule has is not run."""
        inputs, n, dtype = rows.inputs, rows.num_molecules, self.dtype
        graph = self.graph_encoder(
            inputs["atom_features"], inputs["bond_features"], inputs["edge_index"], inputs["batch"], ptr=rows.ptr,
            num_graphs=n, masked_atoms=inputs["masked_atoms"],
        )
        pooled, geometry_atoms = {"graph": graph.molecule_embedding}, None
        if self.geometry_encoder is not None and bool(present[:, VIEW_INDEX["geometry"]].any()):
            geometry = self.geometry_encoder(
                inputs["atomic_numbers"], inputs["pos"].to(dtype), inputs["batch"], ptr=rows.ptr,
                atom_features=inputs["atom_features"], num_graphs=n,
            )
            pooled["geometry"], geometry_atoms = geometry.molecule_embedding, geometry.atom_embeddings
        has_image = present[:, VIEW_INDEX["image"]]
        if self.image_encoder is not None and bool(has_image.any()):
            every_image = bool(has_image.all())  # then no row selection: indexing copies the whole batch
            pixels = inputs["pixel_values"] if every_image else inputs["pixel_values"][has_image]
            image = self.image_encoder(pixels.to(dtype)).molecule_embedding
            pooled["image"] = image if every_image else _scatter_rows(
                image, has_image.nonzero(as_tuple=True)[0], n, False
            )
        return pooled, graph.atom_embeddings, geometry_atoms

    def _fuse_views(self, pooled: dict, present: torch.Tensor, output_attentions: bool):
        """Project each view to ``hidden_size`` (zero rows where absent) and fuse them.

        Returns ``{view: [n, D] or None}``, the view tokens ``[n, 3, D]`` (zeros for a view that did not run),
        the fused embedding ``[n, D]`` and the fusion attentions (or None)."""
        view_embeddings = {}
        for view in MODALITIES:
            z = self.projections[view](pooled[view]) if view in pooled else None
            if z is not None:
                z = torch.where(present[:, VIEW_INDEX[view], None], z, torch.zeros_like(z))
            view_embeddings[view] = z
        zeros = torch.zeros_like(view_embeddings["graph"])
        tokens = torch.stack([z if z is not None else zeros for z in view_embeddings.values()], dim=1)
        fused, attentions = self.fusion(tokens, present, output_attentions=output_attentions)
        return view_embeddings, tokens, fused, attentions

    def _refine(self, fused: torch.Tensor, tokens: torch.Tensor, present: torch.Tensor, hypergraph_mode):
        """Memory assignment ``[n, K]`` (None without memory) and the hypergraph-refined embedding ``[n, D]``."""
        if self.memory is None:
            anchors = assignments = None
        else:
            anchors = self.memory.normalized_anchors().to(fused.dtype)
            assignments = self.memory.assign(fused)
        if self.hypergraph is None:
            return assignments, fused
        mode = hypergraph_mode or ("batch" if self.training else "anchors")
        unified = self.hypergraph(fused, tokens, present, anchors=anchors, mode=mode)
        return assignments, unified


#: the batch-contract arguments a head hands to its backbone unchanged
BACKBONE_KEYS = (
    "atom_features", "bond_features", "edge_index", "batch", "ptr", "atomic_numbers", "pos", "pixel_values",
    "valid_mask", "conformer_status", "modality_mask",
)


def _backbone_inputs(arguments: dict) -> dict:
    """``{key: arguments[key]}`` for :data:`BACKBONE_KEYS`: a head's forward passes ``locals()``, so its
    signature stays explicit (transformers style) without a 13-line pass-through list."""
    return {key: arguments[key] for key in BACKBONE_KEYS}


def _stack_views(output: MMSAModelOutput, rows: torch.Tensor, hidden: int) -> torch.Tensor:
    reference = output.fused_embedding[rows]
    views = []
    for modality in MODALITIES:
        z = getattr(output, f"{modality}_embedding")
        views.append(z[rows] if z is not None else reference.new_zeros(reference.size(0), hidden))
    return torch.stack(views, dim=1)


class MMSAForPreTraining(MMSAPreTrainedModel):
    r"""Self-supervised MMSA pretraining.

    .. math::
        \mathcal{L} = w_c\,\mathcal{L}_{contrastive} + w_r\,\mathcal{L}_{reconstruction}
            + w_h\,\mathcal{L}_{hypergraph} + w_m\,\mathcal{L}_{memory} + w_a\,\mathcal{L}_{mask}
            + w_d\,\mathcal{L}_{descriptor} + w_f\,\mathcal{L}_{fingerprint} + w_s\,\mathcal{L}_{assay}

    (see ``losses.py`` and ``masked_attributes.py``). With ``masked_atom_ratio > 0`` the GIN sees a masked copy of
    every graph (the masked atoms and their bonds replaced by mask embeddings) and :math:`\mathcal{L}_{mask}`
    predicts their attributes. With ``num_descriptors > 0``, :math:`\mathcal{L}_{descriptor}` regresses the
    ``descriptor_targets`` of each molecule from the pooled GIN output (``descriptor_head.py``); with
    ``num_fingerprint_bits > 0``, :math:`\mathcal{L}_{fingerprint}` predicts its Morgan bits
    (``fingerprint_targets``, ``fingerprint_head.py``); with ``assay_tasks``, :math:`\mathcal{L}_{assay}` predicts
    its measured bioassay outcomes (``assay_targets``, ``assay_head.py``). Under the
    ``"ema"`` memory rule the anchors are updated in place at the end of every
    training-mode forward (``update_memory`` overrides this), from the embeddings of ``config.memory_space``
    gathered across processes.
    """

    _keys_to_ignore_on_load_unexpected = [r"classifier\."]

    def __init__(self, config: MMSAConfig):
        super().__init__(config)
        self.mmsa = MMSAModel(config)
        self.reconstruction_heads = nn.ModuleDict(
            {m: MMSAReconstructionHead(config.hidden_size) for m in config.enabled_modalities}
        )
        self.attribute_head = MMSAMaskedAttributeHead(config) if config.masked_atom_ratio > 0 else None
        self.descriptor_head = MMSADescriptorHead(config) if config.num_descriptors > 0 else None
        self.fingerprint_head = MMSAFingerprintHead(config) if config.num_fingerprint_bits > 0 else None
        self.assay_head = MMSAAssayHead(config) if config.num_assay_tasks > 0 else None
        self.hypergraph_mask_token = (
            nn.Parameter(torch.zeros(config.hidden_size))
            if config.use_hypergraph and config.hypergraph_consistency_target == "masked"
            else None
        )
        self.post_init()

    def forward(
        self,
        atom_features: torch.LongTensor,
        bond_features: torch.LongTensor,
        edge_index: torch.LongTensor,
        batch: torch.LongTensor,
        ptr: torch.LongTensor | None = None,
        atomic_numbers: torch.LongTensor | None = None,
        pos: torch.FloatTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        valid_mask: torch.BoolTensor | None = None,
        conformer_status: torch.LongTensor | None = None,
        input_indices: torch.LongTensor | None = None,
        smiles: list[str] | None = None,
        modality_mask: torch.BoolTensor | None = None,
        masked_atoms: torch.BoolTensor | None = None,
        descriptor_targets: torch.FloatTensor | None = None,
        fingerprint_targets: torch.FloatTensor | None = None,
        assay_targets: torch.FloatTensor | None = None,
        update_memory: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> MMSAPretrainingOutput | tuple:
        r"""
        Args:
            (batch contract keys): see [`MMSAModel.forward`].
            masked_atoms (`torch.BoolTensor` of shape `(N,)`, *optional*): atoms to mask; by default
                ``masked_atom_ratio`` of every valid molecule's atoms, drawn from torch's global generator.
            descriptor_targets (`torch.FloatTensor` of shape `(B, num_descriptors)`, *optional*): normalised
                descriptors in ``[0, 1]``, NaN where missing; without them the descriptor term is 0.
            fingerprint_targets (`torch.FloatTensor` of shape `(B, num_fingerprint_bits)`, *optional*): Morgan
                bits in ``{0, 1}``, NaN for a masked molecule; without them the fingerprint term is 0.
            assay_targets (`torch.FloatTensor` of shape `(B, num_assay_tasks)`, *optional*): assay outcomes in
                ``{0, 1}``, NaN where not measured; without them the assay term is 0.
            update_memory (`bool`, *optional*): apply the EMA anchor update (``"ema"`` rule only). Defaults to
                ``self.training``.
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        if masked_atoms is None and self.attribute_head is not None:
            masked_atoms = self._sample_masked_atoms(batch, valid_mask, ptr, pixel_values)
        output = self.mmsa(
            **_backbone_inputs(locals()), masked_atoms=masked_atoms, output_attentions=output_attentions,
            return_dict=True,
        )
        rows = output.valid_mask
        views = _stack_views(output, rows, config.hidden_size)
        present = output.modality_mask[rows]
        fused = output.fused_embedding[rows]
        unified = output.unified_embedding[rows]

        terms = {
            "contrastive_loss": inter_modal_contrastive_loss(views, present, config.contrastive_temperature),
            "reconstruction_loss": cross_modal_reconstruction_loss(
                views, present, [self.reconstruction_heads[m] if m in self.reconstruction_heads else None for m in MODALITIES],
                config.reconstruction_loss_type,
            ),
            "hypergraph_loss": self._hypergraph_loss(unified, fused, views, present),
            "memory_loss": self._memory_loss(views, present, fused),
            "masked_attribute_loss": self._masked_attribute_loss(
                output, atom_features, bond_features, edge_index, batch, masked_atoms
            ),
            "descriptor_loss": self._molecule_target_loss(
                self.descriptor_head, descriptor_loss, output, rows, descriptor_targets, "num_descriptors"
            ),
            "fingerprint_loss": self._molecule_target_loss(
                self.fingerprint_head, fingerprint_loss, output, rows, fingerprint_targets, "num_fingerprint_bits"
            ),
            "assay_loss": self._molecule_target_loss(
                self.assay_head, fingerprint_loss, output, rows, assay_targets, "num_assay_tasks"
            ),
        }
        loss = sum(getattr(config, name.replace("_loss", "_weight")) * value for name, value in terms.items())
        if not loss.requires_grad and torch.is_grad_enabled() and fused.requires_grad:
            loss = loss + 0.0 * fused.sum()  # keeps backward() valid on a batch with nothing to compare

        do_update = self.training if update_memory is None else update_memory
        memory = self.mmsa.memory
        if memory is not None and memory.update_rule == "ema" and do_update:
            memory.ema_update(self._memory_members(views, present, fused).detach())

        result = MMSAPretrainingOutput(
            loss=loss,
            **{name: value.detach() for name, value in terms.items()},
            anchors_in_use=self._anchors_in_use(output, rows, fused),
            unified_embedding=output.unified_embedding,
            anchor_assignments=output.anchor_assignments,
            modality_mask=output.modality_mask,
            valid_mask=output.valid_mask,
            attentions=output.attentions,
        )
        return result if return_dict else result.to_tuple()

    # ------------------------------------------------------------------ loss terms
    def _sample_masked_atoms(self, batch, valid_mask, ptr, pixel_values) -> torch.Tensor | None:
        """``masked_atom_ratio`` of each molecule's atoms, in training mode only (eval scores clean graphs)."""
        if not self.training:
            return None
        num_molecules = _num_molecules(batch, ptr, valid_mask, pixel_values)
        return sample_masked_atoms(batch, num_molecules, self.config.masked_atom_ratio)

    def _masked_attribute_loss(self, output, atom_features, bond_features, edge_index, batch, masked_atoms):
        if self.attribute_head is None or masked_atoms is None:
            return torch.zeros((), device=atom_features.device)
        masked_atoms = masked_atoms.to(torch.bool) & output.valid_mask[batch]  # placeholder atoms never count
        return masked_attribute_loss(
            self.attribute_head, output.atom_embeddings, atom_features, bond_features, edge_index, masked_atoms
        )

    def _molecule_target_loss(self, head, loss_fn, output, rows, targets, width_field: str) -> torch.Tensor:
        """A molecule-level term (descriptor, fingerprint or assay): ``loss_fn(head(pooled GIN output), targets)`` over
        the valid rows; 0 without the head or the targets."""
        pooled = output.graph_pooled_output
        if head is None or targets is None:
            return torch.zeros((), device=pooled.device)
        width = getattr(self.config, width_field)
        if targets.shape != (pooled.size(0), width):
            raise ValueError(
                f"targets of shape {tuple(targets.shape)}, expected ({pooled.size(0)}, {width_field}={width})"
            )
        return loss_fn(head(pooled[rows]), targets[rows])

    def _hypergraph_loss(self, unified, fused, views, present) -> torch.Tensor:
        config = self.config
        if self.mmsa.hypergraph is None:
            return torch.zeros((), device=fused.device)
        if config.hypergraph_consistency_target != "masked":
            return hypergraph_consistency_loss(
                unified, fused, views, present, config.contrastive_temperature, config.hypergraph_consistency_target
            )
        anchors = self.mmsa.memory.normalized_anchors().to(fused.dtype) if self.mmsa.memory is not None else None
        return masked_hypergraph_loss(
            self.mmsa.hypergraph, fused, views, present, anchors, self.hypergraph_mask_token,
            config.hypergraph_mask_ratio, config.contrastive_temperature, deterministic=not self.training,
        )

    def _memory_loss(self, views, present, fused) -> torch.Tensor:
        config = self.config
        if self.mmsa.memory is None:
            return torch.zeros((), device=fused.device)
        return memory_alignment_loss(
            self.mmsa.memory, views, present, fused, config.memory_target_temperature,
            config.memory_sinkhorn_iterations, space=config.memory_space,
        )

    def _memory_members(self, views, present, fused) -> torch.Tensor:
        """The embeddings the anchors learn from: the fused ones, plus every present view (``"shared"``)."""
        if self.config.memory_space == "shared":
            return torch.cat([fused, views[present].to(fused.dtype)], dim=0)
        return fused

    def _anchors_in_use(self, output, rows, fused) -> torch.Tensor:
        if self.mmsa.memory is None or fused.size(0) == 0:
            return torch.zeros((), dtype=torch.long, device=fused.device)
        used = output.anchor_assignments[rows].argmax(dim=-1).unique().numel()
        return torch.tensor(used, device=fused.device)


class MMSAForMolecularPropertyPrediction(MMSAPreTrainedModel):
    r"""MMSA backbone + property head (classification or regression), for MoleculeNet-style fine-tuning.

    The head reads ``config.resolved_downstream_embedding`` computed from ``config.downstream_modalities``
    (``["graph"]`` alone: the pooled GIN output, the GraphMVP protocol). The hypergraph, if any, runs in
    ``"anchors"`` mode in training *and* eval, so predictions never depend on batch composition.

    Losses (``config.problem_type``):

    - ``"multi_label_classification"`` (aliases ``"binary"``, ``"multi_label"``): BCE-with-logits averaged over
      the labels that are not NaN; labels ``[B, num_labels]`` (or ``[B]`` when ``num_labels == 1``).
    - ``"regression"``: MSE between the logits and ``(labels - label_mean) / label_std`` over non-NaN labels;
      ``predictions`` are de-normalised (``logits * std + mean``, see :meth:`denormalize`).
    - ``"single_label_classification"`` (alias ``"multi_class"``): cross-entropy, integer labels ``[B]``,
      ``-100`` ignored.

    Loading a pretraining checkpoint with ``from_pretrained`` loads the backbone (``mmsa.*``) and initialises
    the head (``classifier.*``); the pretraining-only reconstruction heads are dropped.
    """

    _keys_to_ignore_on_load_unexpected = [
        r"reconstruction_heads\.", r"attribute_head\.", r"descriptor_head\.", r"fingerprint_head\.", r"assay_head\.",
        r"hypergraph_mask_token",
    ]

    def __init__(self, config: MMSAConfig):
        super().__init__(config)
        self.mmsa = MMSAModel(config)
        embedding = config.resolved_downstream_embedding
        in_features = config.graph_hidden_size if embedding == "graph" else config.hidden_size
        self.classifier = MMSAPropertyHead(
            in_features, config.num_labels, config.classifier_dropout, config.classifier_hidden_size
        )
        self.post_init()

    def _label_statistics(self, reference: torch.Tensor):
        n = self.config.num_labels
        mean = self.config.label_mean if self.config.label_mean is not None else [0.0] * n
        std = self.config.label_std if self.config.label_std is not None else [1.0] * n
        kwargs = {"device": reference.device, "dtype": torch.float32}
        return torch.tensor(mean, **kwargs), torch.tensor(std, **kwargs)

    def denormalize(self, logits: torch.Tensor) -> torch.Tensor:
        """Regression: map head outputs to label units, ``logits * label_std + label_mean``."""
        mean, std = self._label_statistics(logits)
        return logits.float() * std + mean

    def predict_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities (classification) or de-normalised values (regression)."""
        problem = self.config.resolved_problem_type
        if problem == "regression":
            return self.denormalize(logits)
        if problem == "single_label_classification":
            return torch.softmax(logits.float(), dim=-1)
        return torch.sigmoid(logits.float())

    def forward(
        self,
        atom_features: torch.LongTensor,
        bond_features: torch.LongTensor,
        edge_index: torch.LongTensor,
        batch: torch.LongTensor,
        ptr: torch.LongTensor | None = None,
        atomic_numbers: torch.LongTensor | None = None,
        pos: torch.FloatTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        valid_mask: torch.BoolTensor | None = None,
        conformer_status: torch.LongTensor | None = None,
        input_indices: torch.LongTensor | None = None,
        smiles: list[str] | None = None,
        labels: torch.Tensor | None = None,
        modality_mask: torch.BoolTensor | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> MMSAPropertyPredictionOutput | tuple:
        r"""
        Args:
            (batch contract keys): see [`MMSAModel.forward`].
            labels (`torch.Tensor`, *optional*): float ``[B, num_labels]`` with NaN for missing labels
                (classification / regression), or long ``[B]`` class indices (multi-class).
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        embedding_kind = config.resolved_downstream_embedding
        output = self.mmsa(
            **_backbone_inputs(locals()),
            modalities=config.downstream_modalities,
            hypergraph_mode="anchors",
            encoders_only=embedding_kind == "graph",
            output_attentions=output_attentions,
            return_dict=True,
        )
        embeddings = {
            "graph": output.graph_pooled_output,
            "fused": output.fused_embedding,
            "unified": output.unified_embedding,
        }[embedding_kind]
        rows = output.valid_mask
        logits = self.classifier(embeddings)
        logits = torch.where(rows.unsqueeze(-1), logits, torch.zeros_like(logits))
        predictions = self.predict_from_logits(logits)
        predictions = torch.where(rows.unsqueeze(-1), predictions, torch.full_like(predictions, float("nan")))

        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            problem = config.resolved_problem_type
            valid_logits, valid_labels = logits[rows], labels[rows]
            if problem == "single_label_classification":
                loss = multiclass_cross_entropy(valid_logits, valid_labels)
            elif problem == "regression":
                mean, std = self._label_statistics(logits)
                loss = masked_normalized_mse(valid_logits, valid_labels, mean, std)
            else:
                loss = masked_bce_with_logits(valid_logits, valid_labels)

        result = MMSAPropertyPredictionOutput(
            loss=loss,
            logits=logits,
            predictions=predictions,
            embeddings=embeddings,
            valid_mask=rows,
            attentions=output.attentions,
        )
        return result if return_dict else result.to_tuple()


class MMSAForPretraining(MMSAForPreTraining):
    """Deprecated alias of [`MMSAForPreTraining`] (the transformers spelling); kept so that code and checkpoints
    written before the rename keep working. Emits a ``FutureWarning``."""

    def __init__(self, config: MMSAConfig):
        warnings.warn(
            "MMSAForPretraining is renamed MMSAForPreTraining; the old name will be removed in a future release",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(config)


# Hub remote code: save_pretrained copies the modeling files of a registered class and writes auto_map (the
# config class is registered in configuration_mmsa.py; mmsa_hf._registration maps the Auto classes locally).
MMSAModel.register_for_auto_class("AutoModel")
MMSAForPreTraining.register_for_auto_class("AutoModelForPreTraining")
MMSAForMolecularPropertyPrediction.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "MMSAPreTrainedModel",
    "MMSAModel",
    "MMSAForPreTraining",
    "MMSAForPretraining",
    "MMSAForMolecularPropertyPrediction",
]
