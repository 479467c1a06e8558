"""Helpers shared by the modeling tests (a uniquely named module: every tests/ folder has its own conftest)."""

from __future__ import annotations

import torch

from mmsa_hf.modeling import MMSAConfig


def tiny_config(**overrides) -> MMSAConfig:
    return MMSAConfig.from_preset("tiny", **overrides)


def assert_state_dicts_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b), f"key mismatch: {sorted(set(a) ^ set(b))[:10]}"
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), f"tensor {key} differs"
