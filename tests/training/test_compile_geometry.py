"""Pretraining compiles the 3D encoder's message passing on the CPU unless told not to."""

from __future__ import annotations

import torch

from mmsa_hf.modeling import MMSAConfig, MMSAForPreTraining
from mmsa_hf.training import pretrain


def test_pretraining_compiles_geometry_by_default_and_not_when_told():
    assert pretrain.parse_args([]).compile_geometry is True
    assert pretrain.parse_args(["--no_compile_geometry"]).compile_geometry is False


def test_geometry_compiled_only_on_the_cpu_when_enabled_and_present():
    def fresh(**overrides):
        return MMSAForPreTraining(MMSAConfig.from_preset("tiny", **overrides))

    model = fresh()
    assert pretrain.compile_geometry_for_run(model, False, torch.device("cpu")) is False
    assert pretrain.compile_geometry_for_run(model, True, torch.device("cuda")) is False
    assert model.mmsa.geometry_encoder.compiled_message_passing is None
    assert pretrain.compile_geometry_for_run(model, True, torch.device("cpu")) is True
    assert model.mmsa.geometry_encoder.compiled_message_passing is not None
    no_geometry = fresh(use_geometry=False)
    assert pretrain.compile_geometry_for_run(no_geometry, True, torch.device("cpu")) is False
