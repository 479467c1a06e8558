"""The pretraining CLI switches of the objective terms map to the config fields they name."""

from __future__ import annotations

import pytest

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
