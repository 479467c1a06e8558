"""Registry and load_moleculenet: shapes, NaN labels, row_index, excluded rows, stored split info."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from mmsa_data_testutils import MOLECULENET, canonical_split_sha256

import mmsa_hf.data.moleculenet as mn
from mmsa_hf.data import (
    MOLECULENET_TASKS,
    get_split_info,
    get_task,
    load_moleculenet,
    load_split,
    save_split,
)

TOX21_BAD = [1322, 2290, 2297, 3558, 4565, 4649, 5538, 6723]


def test_registry_matches_files():
    assert tuple(MOLECULENET_TASKS) == MOLECULENET
    for name, task in MOLECULENET_TASKS.items():
        header = pd.read_csv(task.path, nrows=0).columns.tolist()
        assert header[0] == task.smiles_column
        assert list(task.label_columns) == header[1:], name
        assert task.task_type in ("classification", "regression")
        assert task.metric == ("roc_auc" if task.task_type == "classification" else "rmse")
    assert get_task("toxcast").num_tasks == 617 and get_task("sider").num_tasks == 27
    assert get_task("bace").smiles_column == "mol"
    assert {n for n, t in MOLECULENET_TASKS.items() if t.task_type == "regression"} == {"esol", "freesolv", "lipophilicity"}
    with pytest.raises(ValueError, match="Unknown MoleculeNet"):
        get_task("qm9")


def test_tox21_splits(hf_cache, caplog, tmp_path, reference_hashes):
    with caplog.at_level(logging.WARNING, logger="mmsa_hf.data.moleculenet"):
        dsd = load_moleculenet("tox21", cache_dir=hf_cache)
    # excluded rows are reported, not silently dropped
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "8 row(s)" in msg and "1322" in msg and "6723" in msg
    assert dsd.excluded_rows == TOX21_BAD
    assert all("[AlH3]" in s for s in dsd.excluded_smiles)

    assert list(dsd) == ["train", "validation", "test"]
    assert [len(dsd[k]) for k in dsd] == [6258, 782, 783]
    task = get_task("tox21")
    for ds in dsd.values():
        assert ds.column_names == ["smiles", *task.label_columns, "row_index"]
        assert all(ds.features[c].dtype == "float64" for c in task.label_columns)
        assert ds.features["row_index"].dtype == "int64"

    # row_index points at the original data row; labels equal the file's, NaN where the cell is empty
    df = pd.read_csv(task.path)
    test = dsd["test"].with_format("numpy")
    rows = test["row_index"][:]
    assert not set(rows.tolist()) & set(TOX21_BAD)
    assert list(test["smiles"][:]) == df["smiles"].iloc[rows].tolist()
    for c in task.label_columns:
        np.testing.assert_array_equal(test[c][:], df[c].iloc[rows].to_numpy(dtype=np.float64))  # NaN == NaN here
    n_nan = sum(int(np.isnan(dsd[k].with_format("numpy")[c][:]).sum()) for k in dsd for c in task.label_columns)
    assert n_nan == int(df.drop(index=TOX21_BAD)[list(task.label_columns)].isna().sum().sum()) > 0

    # metadata in info.description survives map()
    info = get_split_info(dsd["train"].map(lambda b: b, batched=True))
    assert info["excluded_rows"] == TOX21_BAD and info["split"] == "scaffold"
    assert info["split_sizes"] == {"train": 6258, "valid": 782, "test": 783}

    # save_split writes the reference format; it round-trips through load_moleculenet(split=path)
    path = tmp_path / "split.json"
    saved = save_split(dsd, path)
    on_disk = json.loads(path.read_text())
    assert set(on_disk) == {"train", "valid", "test", "excluded"}
    assert canonical_split_sha256(on_disk) == reference_hashes["sha256"]["tox21"]
    assert load_split(path) == saved
    again = load_moleculenet("tox21", split=str(path), cache_dir=hf_cache)
    assert again.split_indices == saved
    # without the attribute, save_split rebuilds the split from row_index + description
    del dsd.split_indices
    assert save_split(dsd, tmp_path / "rebuilt.json") == saved


def test_label_dtype_float32_and_bace_smiles_column(hf_cache):
    dsd = load_moleculenet("bace", cache_dir=hf_cache, label_dtype="float32")
    assert dsd["train"].features["Class"].dtype == "float32"
    assert "smiles" in dsd["train"].column_names and "mol" not in dsd["train"].column_names


def test_local_parquet_and_directory_give_same_split(hf_cache, tmp_path):
    df = pd.read_csv(get_task("esol").path)
    df.to_parquet(tmp_path / "esol.parquet")
    a = load_moleculenet("esol", cache_dir=hf_cache)
    b = load_moleculenet("esol", data_files=str(tmp_path / "esol.parquet"), cache_dir=hf_cache)
    c = load_moleculenet("esol", data_files=str(tmp_path), cache_dir=hf_cache)  # directory lookup
    assert a.split_indices == b.split_indices == c.split_indices
    assert a["test"]["smiles"][:] == b["test"]["smiles"][:]
    assert get_split_info(b)["source"].endswith("esol.parquet")


def test_missing_label_column_is_an_error(hf_cache, tmp_path):
    pd.DataFrame({"smiles": ["CCO"], "other": [1.0]}).to_csv(tmp_path / "esol.csv", index=False)
    with pytest.raises(ValueError, match="label columns missing"):
        load_moleculenet("esol", data_files=str(tmp_path / "esol.csv"), cache_dir=hf_cache)


def test_hub_id_goes_through_load_dataset(hf_cache, monkeypatch):
    import datasets

    real = datasets.load_dataset
    calls = []

    def fake(path, *args, **kwargs):
        if path == "someone/freesolv-mirror":
            calls.append((path, kwargs))
            return real("csv", data_files=str(get_task("freesolv").path), split="train", cache_dir=hf_cache)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    dsd = load_moleculenet("freesolv", data_files="someone/freesolv-mirror", cache_dir=hf_cache, revision="abc123")
    assert calls and calls[0][1]["revision"] == "abc123" and calls[0][1]["split"] == "train"
    assert get_split_info(dsd)["source"] == "hub:someone/freesolv-mirror@abc123"
    assert dsd.split_indices == load_moleculenet("freesolv", cache_dir=hf_cache).split_indices


def test_nonexistent_path_is_a_clear_error(hf_cache):
    with pytest.raises(FileNotFoundError):
        load_moleculenet("esol", data_files="/nonexistent/esol.csv", cache_dir=hf_cache)


def test_scaffold_table_cached_across_calls(hf_cache, monkeypatch):
    load_moleculenet("clintox", cache_dir=hf_cache)
    calls = []
    real = mn.canonicalize_and_scaffold
    monkeypatch.setattr(mn, "canonicalize_and_scaffold", lambda s: calls.append(1) or real(s))
    load_moleculenet("clintox", cache_dir=hf_cache)
    assert calls == []  # served from the datasets cache: no RDKit work
