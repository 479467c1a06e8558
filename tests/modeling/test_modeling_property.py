"""MMSAForMolecularPropertyPrediction: loading a pretraining checkpoint, losses, label normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmsa_hf.modeling import MMSAForMolecularPropertyPrediction, MMSAForPreTraining, MMSAModel
from mmsa_hf.modeling.testing_utils import subset_batch

from mmsa_modeling_testutils import assert_state_dicts_equal, tiny_config


def _pretrained_checkpoint(tmp_path, batch, **overrides):
    model = MMSAForPreTraining(tiny_config(**overrides)).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch).loss.backward()
    optimizer.step()
    model.save_pretrained(tmp_path)
    return model


def test_property_model_loads_the_backbone_and_initialises_the_head(tmp_path, batch):
    pretrained = _pretrained_checkpoint(tmp_path, batch)
    model, info = MMSAForMolecularPropertyPrediction.from_pretrained(
        tmp_path, num_labels=3, problem_type="binary", output_loading_info=True
    )
    assert model.config.problem_type == "multi_label_classification" and model.config.num_labels == 3
    assert info["missing_keys"] == {"classifier.layers.1.weight", "classifier.layers.1.bias"}
    assert not info["unexpected_keys"]  # reconstruction heads are dropped on purpose
    backbone = {k: v for k, v in pretrained.state_dict().items() if k.startswith("mmsa.")}
    loaded = {k: v for k, v in model.state_dict().items() if k.startswith("mmsa.")}
    assert_state_dicts_equal(backbone, loaded)
    weight = model.classifier.layers[1].weight
    assert weight.shape == (3, pretrained.config.hidden_size)
    assert torch.isfinite(weight).all() and weight.abs().sum() > 0 and weight.abs().max() < 1.0
    # the bare backbone loads from the same checkpoint too
    backbone_model, info = MMSAModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    assert_state_dicts_equal({f"mmsa.{k}": v for k, v in backbone_model.state_dict().items()}, backbone)


def test_graph_only_protocol_reads_the_pooled_gin(tmp_path, batch):
    _pretrained_checkpoint(tmp_path, batch)
    model = MMSAForMolecularPropertyPrediction.from_pretrained(
        tmp_path, num_labels=1, downstream_modalities=["graph"]
    ).train()
    assert model.classifier.layers[1].in_features == model.config.graph_hidden_size
    graph_only = dict(batch, pixel_values=None, pos=None, atomic_numbers=None)  # no image / 3D needed
    labels = torch.tensor([[1.0], [0.0], [1.0], [float("nan")], [0.0], [1.0], [0.0]])
    out = model(**graph_only, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.mmsa.graph_encoder.atom_encoder.embeddings[0].weight.grad is not None
    assert model.mmsa.image_encoder.resnet.embedder.embedder.convolution.weight.grad is None
    torch.testing.assert_close(out.embeddings, model.mmsa(**graph_only, modalities=["graph"], encoders_only=True).graph_pooled_output)


def test_bce_masks_nan_labels_and_placeholder_rows(batch):
    model = MMSAForMolecularPropertyPrediction(tiny_config(num_labels=2, problem_type="multi_label")).eval()
    B = batch["valid_mask"].numel()
    labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0], [float("nan"), float("nan")], [1.0, 1.0],
                           [1.0, 0.0], [0.0, float("nan")], [1.0, 1.0]])
    assert labels.shape[0] == B and not batch["valid_mask"][3]
    out = model(**batch, labels=labels)
    valid = batch["valid_mask"]
    logits, y = out.logits[valid], labels[valid]
    observed = ~torch.isnan(y)
    expected = F.binary_cross_entropy_with_logits(logits[observed], y[observed])
    torch.testing.assert_close(out.loss, expected)
    assert torch.all(out.logits[3] == 0) and torch.isnan(out.predictions[3]).all()
    torch.testing.assert_close(out.predictions[valid], torch.sigmoid(logits))
    # all labels missing: a zero loss that still backpropagates
    out = model(**batch, labels=torch.full((B, 2), float("nan")))
    assert out.loss.item() == 0.0
    out.loss.backward()


def test_regression_normalises_labels_and_round_trips_statistics(tmp_path, batch):
    config = tiny_config(num_labels=2, problem_type="regression", label_mean=[10.0, -1.0], label_std=[2.0, 0.5])
    model = MMSAForMolecularPropertyPrediction(config).eval()
    B = batch["valid_mask"].numel()
    labels = torch.randn(B, 2) * torch.tensor([2.0, 0.5]) + torch.tensor([10.0, -1.0])
    labels[0, 1] = float("nan")
    out = model(**batch, labels=labels)
    valid = batch["valid_mask"]
    torch.testing.assert_close(out.predictions[valid], out.logits[valid] * torch.tensor([2.0, 0.5]) + torch.tensor([10.0, -1.0]))
    torch.testing.assert_close(model.denormalize(out.logits)[valid], out.predictions[valid])
    target = (labels[valid] - torch.tensor([10.0, -1.0])) / torch.tensor([2.0, 0.5])
    observed = ~torch.isnan(target)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits[valid][observed], target[observed]))

    model.save_pretrained(tmp_path)
    reloaded = MMSAForMolecularPropertyPrediction.from_pretrained(tmp_path).eval()
    assert reloaded.config.label_mean == [10.0, -1.0] and reloaded.config.label_std == [2.0, 0.5]
    again = reloaded(**batch, labels=labels)
    torch.testing.assert_close(again.predictions[valid], out.predictions[valid], atol=0, rtol=0)
    torch.testing.assert_close(again.loss, out.loss, atol=0, rtol=0)


def test_multiclass_cross_entropy(batch):
    model = MMSAForMolecularPropertyPrediction(tiny_config(num_labels=4, problem_type="multi_class")).eval()
    labels = torch.tensor([0, 3, 1, 2, -100, 2, 1])
    out = model(**batch, labels=labels)
    valid = batch["valid_mask"] & (labels != -100)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits[valid], labels[valid]))
    torch.testing.assert_close(out.predictions[batch["valid_mask"]].sum(-1), torch.ones(int(batch["valid_mask"].sum())))


def test_property_predictions_do_not_depend_on_the_batch(batch):
    # the property model always runs the hypergraph in "anchors" mode, so only BatchNorm couples molecules
    model = MMSAForMolecularPropertyPrediction(tiny_config(num_labels=1, downstream_embedding="unified")).eval()
    full = model(**batch).logits
    part = model(**subset_batch(batch, [5, 1])).logits
    torch.testing.assert_close(part, full[[5, 1]], atol=1e-5, rtol=0)


def test_mlp_head_and_fused_embedding(batch):
    model = MMSAForMolecularPropertyPrediction(
        tiny_config(num_labels=1, classifier_hidden_size=16, classifier_dropout=0.1, downstream_embedding="fused")
    ).train()
    out = model(**batch, labels=torch.ones(batch["valid_mask"].numel(), 1))
    out.loss.backward()
    assert len(model.classifier.layers) == 5
