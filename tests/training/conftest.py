"""Shared fixtures for the training tests: a small BBBP corpus file and one datasets cache."""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import pytest

from mmsa_training_testutils import REPO

BBBP = REPO / "mmsa_hf" / "data" / "moleculenet" / "bbbp.csv.gz"


def _read_rows(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt") as handle:
        return [next(handle) for _ in range(n + 1)]


@pytest.fixture(scope="session")
def training_cache(shared_datasets_cache) -> Path:
    """One ``HF_DATASETS_CACHE`` for every training test (featurization is paid once), the session's shared
    cache, so the scaffold tables of the data tests are reused by the pretraining runs."""
    return shared_datasets_cache


@pytest.fixture(scope="session")
def bbbp_subset_csv(tmp_path_factory) -> Path:
    """The first 100 BBBP rows (header + rows), as a user CSV."""
    path = tmp_path_factory.mktemp("csv") / "bbbp100.csv"
    path.write_text("".join(_read_rows(BBBP, 100)))
    return path


@pytest.fixture(scope="session")
def corpus_csv(tmp_path_factory) -> Path:
    """A 64-molecule unlabeled corpus."""
    rows = _read_rows(BBBP, 64)
    header = rows[0].strip().split(",")
    col = header.index("smiles")
    import csv

    path = tmp_path_factory.mktemp("corpus") / "corpus.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles"])
        for row in csv.reader(rows[1:]):
            writer.writerow([row[col]])
    return path
