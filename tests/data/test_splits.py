"""Scaffold split == the reference split files for all 11 sets; balanced/random splits are seeded,
deterministic, disjoint and complete."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from mmsa_data_testutils import (
    BIG,
    MOLECULENET,
    canonical_split_sha256,
    requires_shared,
    shared_split_path,
)

from mmsa_hf.data import (
    balanced_scaffold_split,
    canonicalize_and_scaffold,
    get_task,
    load_moleculenet,
    random_split,
    scaffold_split,
)
from mmsa_hf.data.splits import balanced_scaffold_split_from_scaffolds, scaffold_split_from_scaffolds

SPLITS = ("train", "valid", "test")


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in names]


def _check_partition(split: dict, n: int):
    rows = [i for k in (*SPLITS, "excluded") for i in split[k]]
    assert len(rows) == len(set(rows)), "splits overlap"
    assert sorted(rows) == list(range(n)), "splits + excluded do not cover every row exactly once"
    for k in (*SPLITS, "excluded"):
        assert split[k] == sorted(split[k])


@pytest.mark.parametrize("name", _params(MOLECULENET))
def test_scaffold_split_reproduces_reference(name, hf_cache, reference_hashes):
    """load_moleculenet(name) draws exactly shared/data/splits/<name>_scaffold.json."""
    dsd = load_moleculenet(name, cache_dir=hf_cache)
    got = dsd.split_indices
    _check_partition(got, get_task(name).num_rows)
    # the row_index columns are the split
    for key, hf in (("train", "train"), ("valid", "validation"), ("test", "test")):
        assert sorted(dsd[hf]["row_index"][:]) == got[key]
    assert {k: len(got[k]) for k in (*SPLITS, "excluded")} == reference_hashes["sizes"][name]
    assert canonical_split_sha256(got) == reference_hashes["sha256"][name]
    ref_path = shared_split_path(name)
    if ref_path.exists():
        assert got == json.loads(ref_path.read_text())


@requires_shared
@pytest.mark.parametrize("name", MOLECULENET)
def test_reference_hash_file_matches_shared_files(name, reference_hashes):
    ref = json.loads(shared_split_path(name).read_text())
    assert canonical_split_sha256(ref) == reference_hashes["sha256"][name]


@pytest.mark.parametrize("name", ["freesolv", "bbbp", "tox21"])
def test_scaffold_split_function_on_raw_smiles(name, reference_hashes):
    """The pure function (no datasets involved) on the CSV's SMILES column.

    freesolv is the set where checking every group (not closing train at the first overflow) matters;
    tox21 has the 8 RDKit-rejected rows."""
    task = get_task(name)
    smiles = pd.read_csv(task.path)[task.smiles_column].tolist()
    split = scaffold_split(smiles)
    assert canonical_split_sha256(split) == reference_hashes["sha256"][name]
    if name == "tox21":
        assert split["excluded"] == [1322, 2290, 2297, 3558, 4565, 4649, 5538, 6723]


def test_scaffold_split_rejects_bad_frac():
    with pytest.raises(ValueError, match="sum to 1"):
        scaffold_split(["CCO"], frac=(0.5, 0.1, 0.1))


def _scaffolds_of(name):
    task = get_task(name)
    smiles = pd.read_csv(task.path)[task.smiles_column].tolist()
    return smiles, canonicalize_and_scaffold(smiles)[1]


def test_balanced_scaffold_split_seeded_and_valid():
    smiles, scaffolds = _scaffolds_of("bbbp")
    n = len(smiles)
    a = balanced_scaffold_split_from_scaffolds(scaffolds, seed=0)
    assert a == balanced_scaffold_split_from_scaffolds(scaffolds, seed=0)
    assert a == balanced_scaffold_split(smiles, seed=0)  # same scaffolds from SMILES
    b = balanced_scaffold_split_from_scaffolds(scaffolds, seed=1)
    assert a["test"] != b["test"]
    for s in (a, b):
        _check_partition(s, n)
        # scaffold groups are never cut
        where = {}
        for k in SPLITS:
            for i in s[k]:
                assert where.setdefault(scaffolds[i], k) == k
        # train never exceeds its share, valid neither
        assert len(s["train"]) <= 0.8 * n and len(s["valid"]) <= 0.1 * n
        assert len(s["test"]) >= 0.1 * n - 1
    # big groups (> half the test size) land in train first
    from collections import Counter

    sizes = Counter(scaffolds)
    big = {sc for sc, c in sizes.items() if c > 0.1 * n / 2}
    assert big, "bbbp should have scaffold groups larger than half the test size"
    for s in (a, b):
        assert all(scaffolds[i] not in big for i in s["valid"] + s["test"])
    assert a["test"] != scaffold_split_from_scaffolds(scaffolds)["test"]


def test_random_split_seeded_disjoint_complete():
    a = random_split(1000, seed=3)
    assert a == random_split(1000, seed=3)
    assert a != random_split(1000, seed=4)
    _check_partition(a, 1000)
    assert (len(a["train"]), len(a["valid"]), len(a["test"])) == (800, 100, 100)
    c = random_split(10, frac=(0.6, 0.2, 0.2), seed=0, excluded=[2, 5])
    _check_partition(c, 10)
    assert c["excluded"] == [2, 5] and len(c["train"]) == 4


def test_load_moleculenet_balanced_and_random_are_seeded(hf_cache):
    for kind in ("balanced_scaffold", "random"):
        a = load_moleculenet("tox21", split=kind, seed=0, cache_dir=hf_cache)
        b = load_moleculenet("tox21", split=kind, seed=0, cache_dir=hf_cache)
        c = load_moleculenet("tox21", split=kind, seed=1, cache_dir=hf_cache)
        assert a.split_indices == b.split_indices
        assert a.split_indices["test"] != c.split_indices["test"]
        _check_partition(a.split_indices, 7831)
        assert a.split_indices["excluded"] == [1322, 2290, 2297, 3558, 4565, 4649, 5538, 6723]


def test_scaffold_folds_partition_the_rows_without_splitting_a_scaffold():
    from mmsa_hf.data import scaffold_folds

    rows = list(range(100, 130))
    scaffolds = [f"s{i % 7}" if i < 21 else f"single{i}" for i in range(30)]  # 7 groups of 3, 9 singletons
    folds = scaffold_folds(rows, scaffolds, 3)
    assert sorted(r for fold in folds for r in fold) == rows
    fold_of = {r: i for i, fold in enumerate(folds) for r in fold}
    for scaffold in set(scaffolds):
        assert len({fold_of[r] for r, s in zip(rows, scaffolds) if s == scaffold}) == 1
    assert [len(f) for f in folds] == [10, 10, 10]  # greedy placement into the emptiest fold balances them
    assert scaffold_folds(rows, scaffolds, 3) == folds  # deterministic


def test_cross_validation_split_validates_on_one_fold_tests_on_the_next_and_trains_on_the_rest():
    from mmsa_hf.data import cross_validation_split

    folds = [[0, 1], [2, 3], [4, 5], [6, 7]]
    split = cross_validation_split(folds, 3, excluded=[9])
    assert split == {"train": [2, 3, 4, 5], "valid": [6, 7], "test": [0, 1], "excluded": [9]}
    for bad, message in (((folds, 4), "not in 0..3"), ((folds[:2], 0), "at least 3")):
        with pytest.raises(ValueError, match=message):
            cross_validation_split(*bad)


def test_scaffold_folds_refuses_more_folds_than_scaffolds():
    from mmsa_hf.data import scaffold_folds

    with pytest.raises(ValueError, match="number of scaffolds"):
        scaffold_folds([0, 1, 2], ["a", "a", "b"], 3)
