"""Assay targets: the task list leaves out the benchmark's assays, the label table matches the raw MoleculeNet rows,
densification masks what was not measured, and the cached column join."""

from __future__ import annotations

import math

import datasets
import numpy as np
import pytest
import torch

from mmsa_hf.data.assays import (
    ASSAY_COLUMN,
    add_assay_labels,
    assay_label_table,
    assay_targets,
    assay_task_names,
)
from mmsa_hf.data.moleculenet import load_moleculenet_raw
from mmsa_hf.data.splits import canonicalize_smiles

TWO_TOXCAST_TASKS = ["toxcast/ACEA_T47D_80hr_Negative", "toxcast/ATG_PXRE_CIS_up"]


def test_default_tasks_are_toxcast_hiv_muv_without_the_tox21_columns():
    names = assay_task_names()
    assert len(names) == 517 + 1 + 17
    assert not any(name.startswith("toxcast/TOX21_") for name in names)
    assert "hiv/HIV_active" in names and sum(name.startswith("muv/") for name in names) == 17
    assert not any(name.split("/")[0] in {"bbbp", "bace", "clintox", "sider", "tox21"} for name in names)
    assert assay_task_names({"hiv": ()}) == ["hiv/HIV_active"]


def test_label_table_holds_the_measured_labels_of_the_raw_rows():
    table = assay_label_table(TWO_TOXCAST_TASKS)
    raw, _ = load_moleculenet_raw("toxcast")
    checked, seen = 0, set()
    for row in raw.select(range(200)):
        smiles = canonicalize_smiles([row["smiles"]])[0]
        if smiles in seen:  # a repeated molecule keeps its first row's labels
            continue
        seen.add(smiles)
        expected = [2 * t + int(row[name.split("/")[1]]) for t, name in enumerate(TWO_TOXCAST_TASKS)
                    if not math.isnan(row[name.split("/")[1]])]
        if smiles is None or not expected:
            assert smiles is None or smiles not in table or table[smiles]
            continue
        assert table[smiles] == expected, row["smiles"]
        checked += 1
    assert checked > 50
    with pytest.raises(ValueError, match="set/column"):
        assay_label_table(["HIV_active"])


def test_targets_are_the_labels_and_nan_where_not_measured():
    rows = [{ASSAY_COLUMN: [1, 4]}, {ASSAY_COLUMN: []}, {ASSAY_COLUMN: None}]
    targets = assay_targets(rows, num_tasks=3)
    assert targets.dtype == torch.float32 and targets.shape == (3, 3)
    assert targets[0, 0] == 1 and targets[0, 2] == 0 and torch.isnan(targets[0, 1])
    assert torch.isnan(targets[1:]).all()
    with pytest.raises(ValueError, match="another task list"):
        assay_targets([{ASSAY_COLUMN: [6]}], num_tasks=3)
    with pytest.raises(KeyError, match="assay_labels"):
        assay_targets([{"canonical_smiles": "CCO"}], num_tasks=3)


def test_add_assay_labels_joins_a_column_and_an_unmeasured_molecule_gets_none():
    table = assay_label_table(TWO_TOXCAST_TASKS)
    measured = next(iter(table))
    dataset = datasets.Dataset.from_dict({"canonical_smiles": [measured, "C1CC1CCCCCCCCCCCCCCCCCCO"], "label": [1, 0]})
    out = add_assay_labels(dataset, TWO_TOXCAST_TASKS)
    assert out.column_names == ["canonical_smiles", "label", ASSAY_COLUMN]
    assert out[ASSAY_COLUMN] == [table[measured], []]
    targets = assay_targets(list(out), len(TWO_TOXCAST_TASKS))
    assert np.isnan(targets[1].numpy()).all() and not np.isnan(targets[0].numpy()).all()
    with pytest.raises(ValueError, match="already has"):
        add_assay_labels(out, TWO_TOXCAST_TASKS)
