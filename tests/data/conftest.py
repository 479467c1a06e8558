"""Fixtures for the data-layer tests.

``hf_cache`` is one ``datasets`` cache directory for the whole session, so the RDKit scaffold table of
each MoleculeNet set is computed once per test run and then shared by the split, loader and corpus
tests (all 11 sets: ~70 s on one core, of which muv ~40 s and hiv ~20 s).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: needs the hiv/muv scaffold tables (~1 min on one core); deselect with -m 'not slow'"
    )


@pytest.fixture(scope="session")
def hf_cache(shared_datasets_cache) -> str:
    return str(shared_datasets_cache)


@pytest.fixture(scope="session")
def reference_hashes() -> dict:
    return json.loads((Path(__file__).resolve().parent / "reference_split_hashes.json").read_text())
