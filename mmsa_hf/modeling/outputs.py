"""Output dataclasses of the MMSA encoders and models (``transformers.utils.ModelOutput`` subclasses).

Shapes: ``B`` molecules in the batch (placeholder rows included), ``N`` atoms, ``D`` = ``config.hidden_size``,
``K`` = ``config.memory_num_anchors``. Rows of placeholder molecules (``valid_mask`` False) are zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class MMSAEncoderOutput(ModelOutput):
    """Output of one view encoder.

    Args:
        molecule_embedding (`torch.FloatTensor` of shape `(B, F)`): pooled molecule embedding.
        atom_embeddings (`torch.FloatTensor` of shape `(N, F)`, *optional*): per-atom embeddings, same atom order
            as the input (the image encoder has none).
    """

    molecule_embedding: torch.FloatTensor | None = None
    atom_embeddings: torch.FloatTensor | None = None


@dataclass
class MMSAModelOutput(ModelOutput):
    """Output of [`MMSAModel`].

    Args:
        unified_embedding (`torch.FloatTensor` of shape `(B, D)`):
            The unified molecular embedding: the fused embedding refined by the structure-awareness hypergraph
            (equal to ``fused_embedding`` when ``use_hypergraph=False``).
        fused_embedding (`torch.FloatTensor` of shape `(B, D)`): output of the attention fusion over the views.
        graph_embedding, image_embedding, geometry_embedding (`torch.FloatTensor` of shape `(B, D)`, *optional*):
            each view's embedding projected to the common width (the vectors the contrastive, reconstruction and
            memory losses use). `None` when the view is disabled or not computed.
        graph_pooled_output (`torch.FloatTensor` of shape `(B, graph_hidden_size)`): pooled 2D-encoder output
            before projection (the GraphMVP-style downstream representation).
        image_pooled_output (`torch.FloatTensor` of shape `(B, image_config.hidden_sizes[-1])`, *optional*).
        geometry_pooled_output (`torch.FloatTensor` of shape `(B, geometry_hidden_size)`, *optional*).
        atom_embeddings (`torch.FloatTensor` of shape `(N, graph_hidden_size)`): per-atom 2D-encoder embeddings,
            aligned with the input atoms (RDKit heavy-atom order).
        geometry_atom_embeddings (`torch.FloatTensor` of shape `(N, geometry_hidden_size)`, *optional*): per-atom
            3D-encoder embeddings.
        anchor_assignments (`torch.FloatTensor` of shape `(B, K)`, *optional*): soft assignment
            ``softmax(z M^T / tau_m)`` of the normalised fused embedding to the memory anchors.
        modality_mask (`torch.BoolTensor` of shape `(B, 3)`): which views (graph, image, geometry) were present.
        valid_mask (`torch.BoolTensor` of shape `(B,)`): False for placeholder rows.
        attentions (`tuple(torch.FloatTensor)`, *optional*): fusion attention weights, one
            `(B, heads, 1 + 3, 1 + 3)` tensor per fusion layer (token 0 is the [FUSE] query, then graph, image,
            geometry), returned when ``output_attentions=True``.
    """

    unified_embedding: torch.FloatTensor | None = None
    fused_embedding: torch.FloatTensor | None = None
    graph_embedding: torch.FloatTensor | None = None
    image_embedding: torch.FloatTensor | None = None
    geometry_embedding: torch.FloatTensor | None = None
    graph_pooled_output: torch.FloatTensor | None = None
    image_pooled_output: torch.FloatTensor | None = None
    geometry_pooled_output: torch.FloatTensor | None = None
    atom_embeddings: torch.FloatTensor | None = None
    geometry_atom_embeddings: torch.FloatTensor | None = None
    anchor_assignments: torch.FloatTensor | None = None
    modality_mask: torch.BoolTensor | None = None
    valid_mask: torch.BoolTensor | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None

    @property
    def view_embeddings(self) -> dict[str, torch.FloatTensor]:
        """``{"graph": [B, D], "image": [B, D], "geometry": [B, D]}`` for the views that were computed
        (a convenience view of the three ``*_embedding`` fields, not a separate field)."""
        views = {}
        for name in ("graph", "image", "geometry"):
            value = getattr(self, f"{name}_embedding")
            if value is not None:
                views[name] = value
        return views


@dataclass
class MMSAPretrainingOutput(ModelOutput):
    """Output of [`MMSAForPreTraining`].

    Args:
        loss (`torch.FloatTensor` scalar): weighted total
            ``w_c * contrastive_loss + w_r * reconstruction_loss + w_h * hypergraph_loss + w_m * memory_loss
            + w_a * masked_attribute_loss + w_d * descriptor_loss + w_f * fingerprint_loss + w_s * assay_loss``.
        contrastive_loss, reconstruction_loss, hypergraph_loss, memory_loss, masked_attribute_loss, descriptor_loss,
            fingerprint_loss, assay_loss (`torch.FloatTensor` scalars):
            the unweighted terms (0 when a term is switched off or has nothing to compare).
        anchors_in_use (`torch.LongTensor` scalar): number of distinct anchors that are the argmax assignment of at
            least one valid molecule in this batch (collapse guard; 0 when ``use_memory=False``).
        unified_embedding (`torch.FloatTensor` of shape `(B, D)`), anchor_assignments (`(B, K)`),
        modality_mask (`(B, 3)`), valid_mask (`(B,)`), attentions: as in [`MMSAModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    hypergraph_loss: torch.FloatTensor | None = None
    memory_loss: torch.FloatTensor | None = None
    masked_attribute_loss: torch.FloatTensor | None = None
    descriptor_loss: torch.FloatTensor | None = None
    fingerprint_loss: torch.FloatTensor | None = None
    assay_loss: torch.FloatTensor | None = None
    anchors_in_use: torch.LongTensor | None = None
    unified_embedding: torch.FloatTensor | None = None
    anchor_assignments: torch.FloatTensor | None = None
    modality_mask: torch.BoolTensor | None = None
    valid_mask: torch.BoolTensor | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MMSAPropertyPredictionOutput(ModelOutput):
    """Output of [`MMSAForMolecularPropertyPrediction`].

    Args:
        loss (`torch.FloatTensor` scalar, *optional*): returned when ``labels`` are given.
        logits (`torch.FloatTensor` of shape `(B, num_labels)`): raw head outputs; for regression these are in
            normalised label units. Zero for placeholder rows.
        predictions (`torch.FloatTensor` of shape `(B, num_labels)`): sigmoid probabilities (binary /
            multi-label), softmax probabilities (multi-class) or de-normalised values ``logits * std + mean``
            (regression). NaN for placeholder rows.
        embeddings (`torch.FloatTensor` of shape `(B, F)`): the representation the head read.
        valid_mask (`torch.BoolTensor` of shape `(B,)`).
        attentions: fusion attention weights, as in [`MMSAModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    predictions: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    valid_mask: torch.BoolTensor | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
