"""Pretraining corpus: dedupe by canonical SMILES, no scaffold-test molecule of any downstream set,
bad-input errors, invalid-SMILES policies."""

from __future__ import annotations

import gzip
import logging

import pandas as pd
import pytest
from mmsa_data_testutils import rdkit_canonical

from mmsa_hf.data import corpus_description, load_moleculenet, load_pretraining_corpus


def _test_molecules(names, hf_cache):
    """Canonical SMILES of each set's scaffold test split, computed here from the loaded split."""
    out = set()
    for n in names:
        out |= {c for c in rdkit_canonical(load_moleculenet(n, cache_dir=hf_cache)["test"]["smiles"][:]) if c}
    return out


def _check_corpus(ds, desc, forbidden):
    smiles = ds["smiles"][:]
    assert len(smiles) == len(set(smiles)), "corpus has duplicates"
    assert not set(smiles) & forbidden, "a scaffold test molecule leaked into the corpus"
    c = desc["counts"]
    assert c["rows"] == c["invalid"] + c["duplicates_removed"] + c["excluded_test_molecules"] + c["molecules"]
    assert c["molecules"] == len(ds)
    assert corpus_description(ds) == desc


def test_moleculenet_subset_corpus(hf_cache):
    names = ["bbbp", "clintox", "esol", "tox21"]
    ds, desc = load_pretraining_corpus(
        datasets=names, exclude_test_of=names + ["bace"], cache_dir=hf_cache, return_description=True
    )
    forbidden = _test_molecules(names + ["bace"], hf_cache)
    _check_corpus(ds, desc, forbidden)
    c = desc["counts"]
    assert c["rows"] == 2039 + 1478 + 1128 + 7831 and c["invalid"] == 8
    assert [r["row"] for r in desc["invalid_rows"]] == [1322, 2290, 2297, 3558, 4565, 4649, 5538, 6723]
    # every entry is canonical: union of the sets' canonical SMILES minus test molecules
    all_canon = set()
    for n in names:
        all_canon |= {x for x in rdkit_canonical(load_moleculenet(n, cache_dir=hf_cache)["train"]["smiles"][:]) if x}
    assert set(ds["smiles"][:]) >= all_canon - forbidden
    assert c["excluded_test_molecules"] > 0 and c["duplicates_removed"] > 0

    full = load_pretraining_corpus(datasets=names, exclude_test=False, cache_dir=hf_cache)
    d2 = corpus_description(full)
    assert d2["counts"]["excluded_test_molecules"] == 0
    assert len(full) == len(ds) + c["excluded_test_molecules"]
    assert set(full["smiles"][:]) & forbidden
    # description survives a map (it lives in info.description)
    assert corpus_description(ds.map(lambda b: b, batched=True))["counts"] == c


@pytest.mark.slow
def test_default_corpus_excludes_every_scaffold_test_set(hf_cache):
    """The default: all 11 sets, minus the scaffold test molecules of all 11 (~70 s on a cold cache)."""
    from mmsa_hf.data import MOLECULENET_NAMES

    ds, desc = load_pretraining_corpus(cache_dir=hf_cache, return_description=True)
    _check_corpus(ds, desc, _test_molecules(MOLECULENET_NAMES, hf_cache))
    assert desc["counts"]["invalid"] == 15  # 8 tox21 + 7 hiv
    assert desc["exclude_test_of"] == list(MOLECULENET_NAMES)


def _write(path, text, gz=False):
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return str(path)


def test_csv_corpus_dedupe_exclusion_limit(tmp_path, hf_cache):
    bbbp_test = load_moleculenet("bbbp", cache_dir=hf_cache)["test"]["smiles"][:3]
    rows = ["CCO", "OCC", "c1ccccc1", "C1=CC=CC=C1", *bbbp_test, "CCN"]
    path = _write(tmp_path / "corpus.csv.gz", "SMILES,id\n" + "".join(f"{s},{i}\n" for i, s in enumerate(rows)), gz=True)
    ds, desc = load_pretraining_corpus(path, exclude_test_of=["bbbp"], cache_dir=hf_cache, return_description=True)
    assert desc["smiles_column"] == "SMILES"  # auto-detected
    assert ds["smiles"][:] == ["CCO", "c1ccccc1", "CCN"]
    assert desc["counts"] == {"rows": 8, "invalid": 0, "duplicates_removed": 2, "excluded_test_molecules": 3, "molecules": 3}
    kept = load_pretraining_corpus(path, exclude_test=False, cache_dir=hf_cache)
    assert len(kept) == 6
    limited = load_pretraining_corpus(path, limit=3, exclude_test=False, cache_dir=hf_cache)
    assert limited["smiles"][:] == ["CCO", "c1ccccc1"] and corpus_description(limited)["counts"]["rows"] == 3


def test_parquet_and_mol_column(tmp_path, hf_cache):
    pd.DataFrame({"mol": ["CCO", "CCC"], "y": [1, 2]}).to_parquet(tmp_path / "c.parquet")
    ds = load_pretraining_corpus(str(tmp_path / "c.parquet"), exclude_test=False, cache_dir=hf_cache)
    assert ds["smiles"][:] == ["CCO", "CCC"]
    pd.DataFrame({"structure": ["CCO"]}).to_parquet(tmp_path / "d.parquet")
    ds = load_pretraining_corpus(str(tmp_path / "d.parquet"), smiles_column="structure", exclude_test=False, cache_dir=hf_cache)
    assert ds["smiles"][:] == ["CCO"]


def test_no_smiles_column_names_file_and_columns(tmp_path, hf_cache):
    path = _write(tmp_path / "nosmiles.csv", "name,value\naspirin,1\n")
    with pytest.raises(ValueError) as err:
        load_pretraining_corpus(path, cache_dir=hf_cache)
    msg = str(err.value)
    assert "nosmiles.csv" in msg and "'name'" in msg and "'value'" in msg
    with pytest.raises(ValueError, match="'structure' not found"):
        load_pretraining_corpus(path, smiles_column="structure", cache_dir=hf_cache)


@pytest.mark.parametrize("kind", ["empty", "empty_gz", "header_only"])
def test_empty_file_is_a_clear_error(tmp_path, hf_cache, kind):
    if kind == "empty":
        path = _write(tmp_path / "empty.csv", "")
    elif kind == "empty_gz":
        path = _write(tmp_path / "empty.csv.gz", "", gz=True)
    else:
        path = _write(tmp_path / "header.csv", "smiles\n")
    with pytest.raises(ValueError, match="empty|no data rows") as err:
        load_pretraining_corpus(path, cache_dir=hf_cache)
    assert tmp_path.name in str(err.value)


def test_invalid_smiles_raise_and_skip(tmp_path, hf_cache, caplog):
    path = _write(tmp_path / "bad.csv", "smiles,id\nCCO,0\nC1CC,1\nc1ccccc1,2\nnot_a_smiles,3\n,4\nCCN,5\n")
    with pytest.raises(ValueError) as err:
        load_pretraining_corpus(path, on_error="raise", exclude_test=False, cache_dir=hf_cache)
    msg = str(err.value)
    assert "row 1" in msg and "'C1CC'" in msg and "bad.csv" in msg and "3 invalid" in msg
    with caplog.at_level(logging.WARNING, logger="mmsa_hf.data.corpus"):
        ds, desc = load_pretraining_corpus(path, on_error="skip", exclude_test=False, cache_dir=hf_cache, return_description=True)
    assert ds["smiles"][:] == ["CCO", "c1ccccc1", "CCN"]
    assert desc["counts"]["invalid"] == 3
    assert [(r["row"], r["smiles"]) for r in desc["invalid_rows"]] == [(1, "C1CC"), (3, "not_a_smiles"), (4, None)]
    assert "skipped 3 invalid SMILES" in caplog.text
    with pytest.raises(ValueError, match="on_error"):
        load_pretraining_corpus(path, on_error="ignore", cache_dir=hf_cache)
