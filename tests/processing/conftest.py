"""Shared fixtures for the processing tests: real molecules from the package-shipped MoleculeNet files."""

from __future__ import annotations

import csv
import gzip
from functools import lru_cache
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "mmsa_hf" / "data" / "moleculenet"


@lru_cache(maxsize=None)
def read_smiles(dataset: str) -> tuple[str, ...]:
    """All SMILES of a shipped MoleculeNet file, in file order (0-based data rows)."""
    with gzip.open(DATA_DIR / f"{dataset}.csv.gz", "rt", newline="") as handle:
        return tuple(row["smiles"] for row in csv.DictReader(handle))


@pytest.fixture(scope="session")
def bbbp() -> tuple[str, ...]:
    return read_smiles("bbbp")


@pytest.fixture(scope="session")
def tox21() -> tuple[str, ...]:
    return read_smiles("tox21")


@pytest.fixture(scope="session")
def hiv() -> tuple[str, ...]:
    return read_smiles("hiv")


@pytest.fixture(scope="session")
def processor():
    from mmsa_hf.processing import MMSAProcessor

    from mmsa_hf.processing import MMSAFeatureExtractor

    # max_atoms=128 (not the default 512) so a real 222-atom hiv molecule is an over-limit case.
    return MMSAProcessor(MMSAFeatureExtractor(max_atoms=128), show_progress=False)


@pytest.fixture(scope="session")
def bbbp_small(bbbp) -> list[str]:
    """12 real BBBP molecules with O, N, Cl, S, F, stereo, a salt, a hydrate and explicit hydrogens."""
    return [bbbp[i] for i in (0, 4, 8, 9, 11, 12, 21, 28, 29, 38, 41, 59)]


@pytest.fixture(scope="session")
def bbbp_small_batch(processor, bbbp_small):
    return processor(bbbp_small)
