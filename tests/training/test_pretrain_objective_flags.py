"""The pretraining CLI switches of the objective terms map to the config fields they name."""

from __future__ import annotations

import pytest
import torch

from mmsa_hf.training.common import resolve_model_config
from mmsa_hf.training.pretrain import _config_overrides, parse_args


def test_default_run_uses_the_new_objective_terms():
    config = resolve_model_config("tiny", _config_overrides(parse_args([])))
    assert config.masked_atom_ratio == 0.15
    assert config.memory_space == "shared"
    assert config.hypergraph_consistency_target == "masked"


def test_legacy_objectives_restore_the_first_implementation():
    config = resolve_model_config("tiny", _config_overrides(parse_args(["--legacy_objectives"])))
    assert config.masked_atom_ratio == 0.0
    assert config.memory_space == "fused_ema"
    assert config.hypergraph_consistency_target == "fused"


def test_single_term_ablation_and_json_overrides():
    args = parse_args(["--no_masked_attributes", "--config_overrides", '{"hypergraph_mask_ratio": 0.25}'])
    config = resolve_model_config("tiny", _config_overrides(args))
    assert config.masked_atom_ratio == 0.0
    assert config.hypergraph_mask_ratio == 0.25
    assert config.memory_space == "shared"


def test_config_overrides_must_be_a_json_object():
    with pytest.raises(SystemExit):
        parse_args(["--config_overrides", "[1, 2]"])


def _saved_tiny_checkpoint(path, **overrides):
    from mmsa_hf.modeling import MMSAForPreTraining

    torch.manual_seed(0)
    model = MMSAForPreTraining(resolve_model_config("tiny", overrides))
    model.save_pretrained(path)
    return model


def test_init_from_starts_from_the_checkpoint_weights_and_config(tmp_path):
    from mmsa_hf.training.pretrain import _initial_model

    saved = _saved_tiny_checkpoint(tmp_path / "ckpt", use_image=False, use_geometry=False)
    args = parse_args(["--init_from", str(tmp_path / "ckpt"), "--no_image", "--no_geometry"])
    model = _initial_model(args, resolve_model_config(args.init_from, _config_overrides(args)))
    assert model.config.use_image is False and model.config.hidden_size == saved.config.hidden_size
    expected = saved.state_dict()
    assert set(model.state_dict()) == set(expected)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_init_from_adds_a_newly_switched_on_descriptor_head(tmp_path):
    """A checkpoint pretrained without descriptors continues with them: the backbone is the checkpoint's, the new
    head is freshly initialised (and the normaliser is fitted on the corpus, since the checkpoint has none)."""
    from mmsa_hf.training.pretrain import _initial_model

    saved = _saved_tiny_checkpoint(tmp_path / "ckpt", use_image=False, use_geometry=False).state_dict()
    args = parse_args(["--init_from", str(tmp_path / "ckpt"), "--no_image", "--no_geometry", "--descriptor_targets"])
    model = _initial_model(args, resolve_model_config(args.init_from, _config_overrides(args)))
    new_keys = set(model.state_dict()) - set(saved)
    assert new_keys and all("descriptor" in key for key in new_keys)
    for name in set(saved) & set(model.state_dict()):
        assert torch.equal(model.state_dict()[name], saved[name]), name


def test_fingerprint_flag_sets_the_default_width_and_keeps_a_checkpoints_width(tmp_path):
    from mmsa_hf.training.pretrain import DEFAULT_FINGERPRINT_BITS

    config = resolve_model_config("tiny", _config_overrides(parse_args(["--fingerprint_targets"])))
    assert config.num_fingerprint_bits == DEFAULT_FINGERPRINT_BITS and config.fingerprint_radius == 2
    assert resolve_model_config("tiny", _config_overrides(parse_args([]))).num_fingerprint_bits == 0
    _saved_tiny_checkpoint(tmp_path / "ckpt", use_image=False, use_geometry=False, num_fingerprint_bits=64)
    args = parse_args(["--init_from", str(tmp_path / "ckpt"), "--fingerprint_targets"])
    assert resolve_model_config(args.init_from, _config_overrides(args)).num_fingerprint_bits == 64


def test_assay_flag_sets_the_default_tasks_and_keeps_a_checkpoints_tasks(tmp_path):
    from mmsa_hf.data.assays import assay_task_names

    config = resolve_model_config("tiny", _config_overrides(parse_args(["--assay_targets"])))
    assert config.assay_tasks == assay_task_names() and config.num_assay_tasks == 535
    assert resolve_model_config("tiny", _config_overrides(parse_args([]))).num_assay_tasks == 0
    _saved_tiny_checkpoint(tmp_path / "ckpt", use_image=False, use_geometry=False, assay_tasks=["hiv/HIV_active"])
    args = parse_args(["--init_from", str(tmp_path / "ckpt"), "--assay_targets"])
    assert resolve_model_config(args.init_from, _config_overrides(args)).assay_tasks == ["hiv/HIV_active"]


def test_init_from_reuses_the_checkpoints_descriptor_normalizer(tmp_path):
    import numpy as np

    from mmsa_hf.data.descriptors import NORMALIZER_FILE, DescriptorNormalizer, descriptor_names
    from mmsa_hf.training.pretrain import _descriptor_normalizer_for

    _saved_tiny_checkpoint(tmp_path / "ckpt")
    values = np.random.default_rng(0).normal(size=(50, len(descriptor_names())))
    DescriptorNormalizer.fit(values, descriptor_names()).save(tmp_path / "ckpt" / NORMALIZER_FILE)
    args = parse_args(["--init_from", str(tmp_path / "ckpt"), "--descriptor_targets"])
    reused = _descriptor_normalizer_for(args, featurized=None)  # never reads the corpus
    assert reused.to_dict() == DescriptorNormalizer.load(tmp_path / "ckpt" / NORMALIZER_FILE).to_dict()


def test_init_from_rejects_a_folder_without_config_and_a_second_architecture(tmp_path):
    with pytest.raises(SystemExit):
        parse_args(["--init_from", str(tmp_path)])
    _saved_tiny_checkpoint(tmp_path / "ckpt")
    with pytest.raises(SystemExit):
        parse_args(["--init_from", str(tmp_path / "ckpt"), "--config", "base"])
