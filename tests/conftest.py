"""Session-wide fixtures and settings shared by every test folder.

``shared_datasets_cache`` is the one ``datasets`` cache of the run. The RDKit scaffold tables of the 11
MoleculeNet sets (~2 min on one core, cold) are computed once in it: the data tests read them through
``cache_dir``, and the pretraining runs launched by the training tests read them through ``HF_DATASETS_CACHE``
(the default corpus excludes every scaffold test set). Caches are keyed by content fingerprints, so sharing
changes no result.

``make test`` runs the suite on two pytest-xdist workers (``-n 2 --dist loadgroup``). Session fixtures live per
worker, so every test that uses the shared cache is put in one xdist group: those tests run on one worker, one
after the other, and the tables are computed once. Every other test is grouped by its file. Each worker and
every process it launches uses one torch / OpenMP thread, so two workers on two cores never oversubscribe them (a
plain ``pytest tests`` keeps torch's default).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_CACHE_GROUP = "shared_datasets_cache"


def pytest_configure(config):
    if "PYTEST_XDIST_WORKER" in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["MKL_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


@pytest.hookimpl(wrapper=True)  # a wrapper runs before every plain hook, xdist's group reader included
def pytest_collection_modifyitems(config, items):
    """The xdist group of each test: one group for every test that reads the shared cache (directly or through
    a fixture), otherwise its file, so module-scoped fixtures are built once and a file's tests keep their
    order (``--dist loadgroup`` then behaves as ``loadfile`` plus the shared-cache group)."""
    for item in items:
        if "shared_datasets_cache" in getattr(item, "fixturenames", ()):
            group = SHARED_CACHE_GROUP
        else:
            group = item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
    return (yield)


@pytest.fixture(scope="session")
def shared_datasets_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shared_datasets_cache")
