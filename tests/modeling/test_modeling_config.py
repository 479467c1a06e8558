"""MMSAConfig: presets, JSON round trip of the ResNet sub-config, validation errors."""

from __future__ import annotations

import pytest
from transformers import AutoConfig, ResNetConfig

from mmsa_hf.modeling import ATOM_FEATURE_VOCAB_SIZES, BOND_FEATURE_VOCAB_SIZES, CONFORMER_STATUSES, MMSAConfig, MMSAModel


def _comparable(config):
    d = config.to_dict()
    d.pop("_name_or_path", None)
    d.pop("transformers_version", None)
    return d


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_presets_round_trip_through_json(preset, tmp_path):
    config = MMSAConfig.from_preset(preset)
    assert isinstance(config.image_config, ResNetConfig)
    assert config.image_config.layer_type == "basic"
    config.save_pretrained(tmp_path)
    reloaded = MMSAConfig.from_pretrained(tmp_path)
    assert isinstance(reloaded.image_config, ResNetConfig)
    assert _comparable(reloaded) == _comparable(config)


def test_base_preset_is_the_reference_size():
    config = MMSAConfig.from_preset("base")
    assert (config.graph_num_layers, config.graph_hidden_size) == (5, 300)
    assert list(config.image_config.depths) == [2, 2, 2, 2]
    assert list(config.image_config.hidden_sizes) == [64, 128, 256, 512]
    assert config.image_config.embedding_size == 64
    assert (config.geometry_num_layers, config.geometry_hidden_size) == (4, 256)
    assert _comparable(MMSAConfig()) == _comparable(config)  # the class defaults are the base preset


def test_from_preset_overrides_and_unknown_preset():
    config = MMSAConfig.from_preset("small", use_geometry=False, image_config={"embedding_size": 8})
    assert config.use_geometry is False
    assert config.image_config.embedding_size == 8
    assert list(config.image_config.hidden_sizes) == [16, 32, 64, 128]  # merged into the preset's ResNet
    with pytest.raises(ValueError, match="unknown preset"):
        MMSAConfig.from_preset("huge")


def test_a_non_default_resnet_survives_the_round_trip(tmp_path):
    resnet50 = {"layer_type": "bottleneck", "hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3]}
    config = MMSAConfig(image_config=resnet50)
    config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)  # registered by `import mmsa_hf`
    assert type(reloaded).__name__ == "MMSAConfig"
    assert reloaded.image_config.layer_type == "bottleneck"
    assert list(reloaded.image_config.hidden_sizes) == [256, 512, 1024, 2048]


def test_vocabularies_match_the_processor():
    processing = pytest.importorskip("mmsa_hf.processing")
    assert list(processing.ATOM_FEATURE_VOCAB_SIZES) == list(ATOM_FEATURE_VOCAB_SIZES)
    assert list(processing.BOND_FEATURE_VOCAB_SIZES) == list(BOND_FEATURE_VOCAB_SIZES)
    assert tuple(processing.CONFORMER_STATUSES) == tuple(CONFORMER_STATUSES)
    config = MMSAConfig()
    assert config.atom_feature_vocab_sizes == list(processing.ATOM_FEATURE_VOCAB_SIZES)
    assert config.bond_feature_vocab_sizes == list(processing.BOND_FEATURE_VOCAB_SIZES)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"downstream_modalities": ["graph", "smell"]}, "unknown modality"),
        ({"downstream_modalities": []}, "at least one modality"),
        ({"use_image": False, "downstream_modalities": ["graph", "image"]}, "downstream modality 'image' is not enabled"),
        ({"use_geometry": False, "downstream_modalities": ["graph", "geometry"]}, "not enabled"),
        ({"hypergraph_k": 0}, "hypergraph_k"),
        ({"hypergraph_anchor_k": 0}, "hypergraph_anchor_k"),
        ({"hypergraph_anchor_k": 9}, "cannot exceed"),
        ({"contrastive_weight": -1.0}, "contrastive_weight"),
        ({"memory_weight": float("nan")}, "memory_weight"),
        ({"memory_update_rule": "momentum"}, "memory_update_rule"),
        ({"memory_ema_momentum": 1.0}, "memory_ema_momentum"),
        ({"memory_temperature": 0.0}, "memory_temperature"),
        ({"contrastive_temperature": -0.1}, "contrastive_temperature"),
        ({"graph_jk": "max"}, "graph_jk"),
        ({"graph_pooling": "attention"}, "graph_pooling"),
        ({"fusion_num_heads": 3}, "divisible"),
        ({"graph_dropout": 1.0}, "graph_dropout"),
        ({"graph_num_layers": 0}, "graph_num_layers"),
        ({"geometry_num_rbf": 1}, "geometry_num_rbf"),
        ({"atom_feature_vocab_sizes": [119, 5]}, "atom_feature_vocab_sizes"),
        ({"bond_feature_vocab_sizes": [5, 7, 0]}, "bond_feature_vocab_sizes"),
        ({"geometry_missing_statuses": ["bad_status"]}, "conformer status"),
        ({"problem_type": "ranking"}, "problem_type"),
        ({"num_labels": 2, "label_mean": [0.0]}, "label_mean"),
        ({"num_labels": 1, "label_mean": [0.0], "label_std": [0.0]}, "label_std"),
        ({"hypergraph_consistency_target": "anchors"}, "hypergraph_consistency_target"),
        ({"reconstruction_loss_type": "l1"}, "reconstruction_loss_type"),
        ({"downstream_embedding": "atoms"}, "downstream_embedding"),
        ({"image_config": {"num_channels": 1}}, "num_channels"),
    ],
)
def test_invalid_values_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        MMSAConfig.from_preset("tiny", **overrides)


def test_default_downstream_modalities_follow_the_switches():
    assert MMSAConfig.from_preset("tiny").downstream_modalities == ["graph", "image", "geometry"]
    assert MMSAConfig.from_preset("tiny", use_image=False).downstream_modalities == ["graph", "geometry"]
    assert MMSAConfig.from_preset("tiny", downstream_modalities="graph").downstream_modalities == ["graph"]


def test_problem_type_aliases_map_to_transformers_names():
    assert MMSAConfig(problem_type="binary", num_labels=1).problem_type == "multi_label_classification"
    assert MMSAConfig(problem_type="multi_label", num_labels=12).problem_type == "multi_label_classification"
    assert MMSAConfig(problem_type="multi_class", num_labels=3).problem_type == "single_label_classification"
    assert MMSAConfig(problem_type="regression", num_labels=1).problem_type == "regression"
    assert MMSAConfig().resolved_problem_type == "multi_label_classification"


def test_attributes_set_after_construction_are_validated_by_the_model():
    config = MMSAConfig.from_preset("tiny")
    config.memory_update_rule = "swap"  # what from_pretrained(path, memory_update_rule="swap") does
    with pytest.raises(ValueError, match="memory_update_rule"):
        MMSAModel(config)
    config = MMSAConfig.from_preset("tiny", num_labels=1)
    config.problem_type = "binary"
    MMSAModel(config)
    assert config.problem_type == "multi_label_classification"


def test_set_label_statistics():
    config = MMSAConfig.from_preset("tiny", num_labels=2, problem_type="regression")
    config.set_label_statistics([1.0, -2.0], [0.5, 0.0])
    assert config.label_mean == [1.0, -2.0]
    assert config.label_std == [0.5, 1.0]  # a constant label gets std 1
    with pytest.raises(ValueError):
        config.set_label_statistics([1.0], [1.0])
