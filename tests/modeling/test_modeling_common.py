"""The common model tests (``mmsa_model_tester.MMSAModelTesterMixin``) applied to every MMSA model class, each in
the ``full`` and the ``graph_only`` config variant: config round trip, save/load, safetensors, output shapes,
attentions, eval determinism, loss and gradient reach, batch independence, seeded initialisation."""

from __future__ import annotations

import inspect

import torch

import mmsa_hf.modeling as modeling
from mmsa_hf.modeling import (
    MMSAForMolecularPropertyPrediction,
    MMSAForPreTraining,
    MMSAForPretraining,
    MMSAModel,
    MMSAPreTrainedModel,
)

from mmsa_model_tester import BATCH_ATOL, MMSAHeadModelTesterMixin, MMSAModelTester, MMSAModelTesterMixin, perturb_
from mmsa_modeling_testutils import assert_state_dicts_equal

all_model_classes = (MMSAModel, MMSAForPreTraining, MMSAForMolecularPropertyPrediction)

#: pretraining-only parameters of the GIN: used only when ``masked_atoms`` is passed (masked attribute pretraining)
MASK_EMBEDDINGS = {
    r"(mmsa\.)?graph_encoder\.(atom_mask_embedding|bond_mask_embeddings)":
        "the GIN's mask embeddings replace masked atoms / bonds; only MMSAForPreTraining masks atoms",
}


class TestMMSAModel(MMSAModelTesterMixin):
    model_class = MMSAModel

    def expected_output_shapes(self, tester, config):
        B, N, D = tester.batch_size, tester.num_atoms, config.hidden_size
        full = not tester.graph_only
        return {
            "unified_embedding": (B, D),
            "fused_embedding": (B, D),
            "graph_embedding": (B, D),
            "image_embedding": (B, D) if full else None,
            "geometry_embedding": (B, D) if full else None,
            "graph_pooled_output": (B, config.graph_hidden_size),
            "image_pooled_output": (B, config.image_config.hidden_sizes[-1]) if full else None,
            "geometry_pooled_output": (B, config.geometry_hidden_size) if full else None,
            "atom_embeddings": (N, config.graph_hidden_size),
            "geometry_atom_embeddings": (N, config.geometry_hidden_size) if full else None,
            "anchor_assignments": (B, config.memory_num_anchors),
            "modality_mask": (B, 3),
            "valid_mask": (B,),
        }

    def training_objective(self, output):
        """No loss of its own: the mean of every float output, so that every parameter that reaches an output
        must get a gradient."""
        return sum(value.mean() for value in output.to_tuple() if torch.is_tensor(value) and value.is_floating_point())

    def parameters_without_gradient(self, tester):
        return dict(MASK_EMBEDDINGS)

    def test_batch_hypergraph_mode_couples_molecules(self):
        """The negative control of the batch-independence test: with kNN hyperedges over the batch (the training
        mode, forced here in eval) a molecule's unified embedding does depend on the other molecules."""
        tester = MMSAModelTester(MMSAModel)
        model = tester.create_model().eval()
        with torch.no_grad():
            full = model(**tester.prepare_inputs(), hypergraph_mode="batch").unified_embedding
            part = model(**tester.prepare_inputs([4, 1, 0]), hypergraph_mode="batch").unified_embedding
        assert (full[[4, 1, 0]] - part).abs().max() > 100 * BATCH_ATOL


class TestMMSAForPreTraining(MMSAModelTesterMixin, MMSAHeadModelTesterMixin):
    model_class = MMSAForPreTraining
    batch_level_fields = ("loss", "contrastive_loss", "reconstruction_loss", "hypergraph_loss", "memory_loss",
                          "masked_attribute_loss", "descriptor_loss", "fingerprint_loss", "assay_loss", "anchors_in_use")

    def expected_output_shapes(self, tester, config):
        B = tester.batch_size
        return {
            **dict.fromkeys(self.batch_level_fields, ()),
            "unified_embedding": (B, config.hidden_size),
            "anchor_assignments": (B, config.memory_num_anchors),
            "modality_mask": (B, 3),
            "valid_mask": (B,),
        }

    def parameters_without_gradient(self, tester):
        if tester.graph_only:
            return {r"reconstruction_heads\.graph\..*": "reconstruction predicts a view from the others; with a single "
                    "view there is none, the term is an exact 0 and its (built) head gets no gradient"}
        return {}

    def head_only_key_patterns(self, tester):
        views = ["graph"] if tester.graph_only else ["graph", "image", "geometry"]
        return {rf"reconstruction_heads\.{view}\..*" for view in views} | {r"attribute_head\..*", r"hypergraph_mask_token"}


class TestMMSAForMolecularPropertyPrediction(MMSAModelTesterMixin, MMSAHeadModelTesterMixin):
    model_class = MMSAForMolecularPropertyPrediction
    batch_level_fields = ("loss",)  # a mean over the batch's labels

    def forward_kwargs(self, tester, batch_size=None):
        return {"labels": tester.prepare_labels(batch_size)}

    def expected_output_shapes(self, tester, config):
        B, L = tester.batch_size, config.num_labels
        # the default downstream_embedding "auto": the pooled GIN for ["graph"], else the unified embedding
        width = config.graph_hidden_size if tester.graph_only else config.hidden_size
        return {"loss": (), "logits": (B, L), "predictions": (B, L), "embeddings": (B, width), "valid_mask": (B,)}

    def attentions_expected(self, tester):
        return not tester.graph_only  # graph-only downstream runs encoders_only: no fusion, no attention weights

    def parameters_without_gradient(self, tester):
        unused = dict(MASK_EMBEDDINGS)
        if tester.graph_only:
            unused[r"mmsa\.(projections|fusion|hypergraph)\..*"] = (
                "downstream_modalities == ['graph'] reads the pooled GIN (GraphMVP protocol, encoders_only): the "
                "projection, fusion and hypergraph do not run")
        return unused

    def head_only_key_patterns(self, tester):
        return {r"classifier\..*"}

    def test_head_initialisation_from_a_backbone_checkpoint_follows_the_seed(self, tester, tmp_path):
        backbone = MMSAModel(tester.get_config())
        perturb_(backbone)
        backbone.save_pretrained(tmp_path)
        loaded = []
        for seed in (0, 0, 1):
            torch.manual_seed(seed)
            loaded.append(MMSAForMolecularPropertyPrediction.from_pretrained(tmp_path).state_dict())
        assert_state_dicts_equal(loaded[0], loaded[1])
        head = [k for k in loaded[0] if k.startswith("classifier.") and k.endswith("weight")]
        assert head and all(not torch.equal(loaded[0][k], loaded[2][k]) for k in head)


def test_every_model_class_has_a_common_test_class():
    exported = {
        obj for obj in vars(modeling).values()
        if inspect.isclass(obj) and issubclass(obj, MMSAPreTrainedModel) and obj is not MMSAPreTrainedModel
    }
    # MMSAForPretraining is the deprecated spelling of MMSAForPreTraining (a subclass that only warns); its
    # behaviour is MMSAForPreTraining's, see test_old_pretraining_class_name_is_a_warning_alias
    assert issubclass(MMSAForPretraining, MMSAForPreTraining)
    assert exported - {MMSAForPretraining} == set(all_model_classes)
    tested = {cls.model_class for cls in globals().values()
              if inspect.isclass(cls) and cls.__name__.startswith("Test") and issubclass(cls, MMSAModelTesterMixin)}
    assert tested == set(all_model_classes)
