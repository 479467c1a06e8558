"""Fixtures of the modeling tests: tiny configs and random contract-valid batches (no RDKit needed)."""

from __future__ import annotations

import pytest
import torch

from mmsa_hf.modeling import MMSAConfig
from mmsa_hf.modeling.testing_utils import make_random_batch


@pytest.fixture
def config() -> MMSAConfig:
    return MMSAConfig.from_preset("tiny")


@pytest.fixture
def batch() -> dict:
    """6 molecules + 1 placeholder row (index 3)."""
    return make_random_batch(num_molecules=6, num_placeholders=1, placeholder_positions=[3], seed=0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
