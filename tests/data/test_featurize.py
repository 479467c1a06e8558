"""featurize_dataset (cached, reported drops) and MMSACollator (== processor(smiles))."""

from __future__ import annotations

import contextlib
import logging
import math

import datasets
import pytest
import torch

import mmsa_hf.data.featurize as featurize_module
from mmsa_hf.data import (
    RECORD_COLUMNS,
    MMSACollator,
    featurize_dataset,
    featurize_report,
    get_task,
    load_moleculenet,
    processor_fingerprint,
)

processing = pytest.importorskip("mmsa_hf.processing")
MMSAProcessor = processing.MMSAProcessor

SMILES = ["CCO", "c1ccccc1O", "C1CC", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC", "not_a_smiles", "OC(=O)c1ccccc1", "C#N"]
BAD = [2, 5]


@pytest.fixture(scope="module")
def processor():
    return MMSAProcessor()


@pytest.fixture()
def small_csv(tmp_path):
    path = tmp_path / "small.csv"
    path.write_text("smiles,y\n" + "".join(f"{s},{i % 2 if i != 3 else ''}\n" for i, s in enumerate(SMILES)))
    return datasets.load_dataset("csv", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))


def _assert_batches_equal(a, b):
    assert set(a.keys()) == set(b.keys())
    for k in b:
        if isinstance(b[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype, k
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True, msg=k)
        else:
            assert a[k] == b[k], k


def test_skip_reports_drops_and_second_call_hits_cache(small_csv, processor, caplog, monkeypatch):
    calls_before = featurize_module.FEATURIZE_CALLS
    with caplog.at_level(logging.WARNING, logger="mmsa_hf.data.featurize"):
        out = featurize_dataset(small_csv, processor, batch_size=4, on_error="skip")
    assert featurize_module.FEATURIZE_CALLS - calls_before == 2  # 8 rows / batch_size 4
    assert len(out) == len(SMILES) - len(BAD)
    assert out["row_index"][:] == [i for i in range(len(SMILES)) if i not in BAD]
    assert out.dropped_rows == BAD
    rep = featurize_report(out)
    assert rep["n_dropped"] == 2 and rep["dropped_row_index"] == BAD
    assert featurize_report(out.map(lambda b: b, batched=True))["dropped_row_index"] == BAD  # in info.description
    assert "2 molecule(s) could not be featurised" in caplog.text and str(BAD) in caplog.text
    assert set(RECORD_COLUMNS) <= set(out.column_names) and {"smiles", "y"} <= set(out.column_names)
    assert out.features["image_png"].dtype == "binary"
    assert out[0]["image_png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert out[2]["y"] is None  # row_index 3 has a missing label (plain CSV: null; the collator makes it NaN)

    # second call: served from the datasets cache; no processor call, no RDKit parsing at all
    def boom(*a, **k):
        raise AssertionError("featurize called on a cached dataset")

    from rdkit import Chem

    monkeypatch.setattr(MMSAProcessor, "featurize", boom)
    monkeypatch.setattr(Chem, "MolFromSmiles", boom)
    calls_before = featurize_module.FEATURIZE_CALLS
    again = featurize_dataset(small_csv, processor, batch_size=4, on_error="skip")
    assert featurize_module.FEATURIZE_CALLS == calls_before
    assert again.cache_files == out.cache_files
    assert again.dropped_rows == BAD
    assert again["canonical_smiles"][:] == out["canonical_smiles"][:]


def test_cache_key_tracks_processor_settings(processor):
    other = MMSAProcessor(image_processor=processing.MMSAImageProcessor(image_size=64))
    same = MMSAProcessor(on_error="skip", num_proc=2, show_progress=False)  # runtime-only settings
    assert processor_fingerprint(other) != processor_fingerprint(processor)
    assert processor_fingerprint(same) == processor_fingerprint(processor)


def test_mask_keeps_placeholders(small_csv, processor):
    out = featurize_dataset(small_csv, processor, batch_size=8, on_error="mask")
    assert len(out) == len(SMILES) and out.dropped_rows == []
    assert [i for i, v in enumerate(out["valid"][:]) if not v] == BAD
    assert featurize_report(out)["n_masked"] == 2
    batch = MMSACollator(processor, label_columns=["y"])([out[i] for i in range(len(out))])
    assert batch["valid_mask"].tolist() == [i not in BAD for i in range(len(SMILES))]
    assert batch["row_index"].tolist() == list(range(len(SMILES)))
    assert math.isnan(batch["labels"][3, 0]) and batch["labels"][4, 0] == 0.0  # null label -> NaN


def test_raise_names_the_row(small_csv, processor):
    with pytest.raises(ValueError, match=r"row_index 2 \(SMILES 'C1CC'\)"):
        featurize_dataset(small_csv, processor, batch_size=4, on_error="raise")


def test_accelerator_main_process_first_and_datasetdict(hf_cache, processor):
    entered = []

    class FakeAccelerator:
        @contextlib.contextmanager
        def main_process_first(self):
            entered.append(True)
            yield

    dsd = load_moleculenet("tox21", cache_dir=hf_cache)
    small = datasets.DatasetDict({k: v.select(range(3)) for k, v in dsd.items()})
    small.split_indices = dsd.split_indices
    out = featurize_dataset(small, processor, accelerator=FakeAccelerator())
    assert len(entered) == 3 and list(out) == ["train", "validation", "test"]
    assert out.split_indices == dsd.split_indices and out.dropped_rows == {k: [] for k in out}


def test_collator_matches_processor(hf_cache, processor):
    dsd = load_moleculenet("tox21", cache_dir=hf_cache)
    test = dsd["test"].select(range(6))
    feats = featurize_dataset(test, processor, batch_size=3)
    task = get_task("tox21")
    collator = MMSACollator(processor, label_columns=task.label_columns)
    rows = [feats[i] for i in range(len(feats))]
    batch = collator(rows)

    direct = processor(test["smiles"][:])
    _assert_batches_equal({k: batch[k] for k in direct.keys()}, direct)

    labels = batch["labels"]
    assert labels.dtype == torch.float32 and labels.shape == (6, task.num_tasks)
    expected = torch.tensor([[test[i][c] for c in task.label_columns] for i in range(6)], dtype=torch.float32)
    assert torch.equal(torch.isnan(labels), torch.isnan(expected)) and torch.isnan(expected).any()
    assert torch.equal(torch.nan_to_num(labels, -1.0), torch.nan_to_num(expected, -1.0))
    assert batch["row_index"].tolist() == test["row_index"][:]

    # a dataset slice (dict of lists) and a DataLoader give the same batch
    _assert_batches_equal(collator(feats[0:6]), batch)
    loader = torch.utils.data.DataLoader(feats, batch_size=6, collate_fn=collator)
    _assert_batches_equal(next(iter(loader)), batch)
    # without label columns: no labels key (pretraining)
    assert "labels" not in MMSACollator(processor)(rows)


def test_graph_only_and_full_caches_are_kept_apart(small_csv, processor, monkeypatch):
    """A graph-only processor writes its own cache (graph columns only) and never reads the full one."""
    from rdkit.Chem import rdDistGeom
    from rdkit.Chem.Draw import rdMolDraw2D

    from mmsa_hf.data.featurize import record_columns

    full = featurize_dataset(small_csv, processor, batch_size=4, on_error="mask")
    graph_processor = MMSAProcessor(views=("graph",))

    def boom(*args, **kwargs):
        raise AssertionError("graph-only featurisation embedded a conformer or drew a molecule")

    monkeypatch.setattr(rdDistGeom, "EmbedMolecule", boom)
    monkeypatch.setattr(rdMolDraw2D, "MolDraw2DCairo", boom)
    calls_before = featurize_module.FEATURIZE_CALLS
    graph = featurize_dataset(small_csv, graph_processor, batch_size=4, on_error="mask")
    assert featurize_module.FEATURIZE_CALLS - calls_before == 2  # computed, not read from the full cache
    assert {f["filename"] for f in graph.cache_files}.isdisjoint(f["filename"] for f in full.cache_files)
    assert graph.featurize_report["fingerprint"] != full.featurize_report["fingerprint"]
    assert set(record_columns(("graph",))) <= set(graph.column_names)
    assert not {"pos", "conformer_status", "image_png"} & set(graph.column_names)
    assert set(full.column_names) - set(graph.column_names) == {"pos", "conformer_status", "image_png"}

    # graph-only rows, and full rows read by a graph-only collator, give the graph-only processor's batch
    rows = [graph[i] for i in range(len(graph))]
    expected = graph_processor(SMILES, on_error="mask")
    _assert_batches_equal(MMSACollator(graph_processor)(rows), {**expected, "row_index": torch.arange(8)})
    _assert_batches_equal(MMSACollator(graph_processor)([full[i] for i in range(len(full))]),
                          {**expected, "row_index": torch.arange(8)})
    with pytest.raises(KeyError, match="'pos' column, needed for the 'geometry' view"):
        MMSACollator(processor)(rows)
