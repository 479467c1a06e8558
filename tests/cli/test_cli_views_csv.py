"""``mmsa predict`` / ``mmsa embed``: CSV output (same rows, columns and values as Parquet) and the graph-only path
(a graph-only model's processor computes no conformer and draws nothing, with the full path's predictions)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from rdkit.Chem import rdDepictor, rdDistGeom
from rdkit.Chem.Draw import rdMolDraw2D

import mmsa_hf.inference as inference
from mmsa_hf.cli import main
from mmsa_hf.inference import report_path

FIXED = ["input_index", "smiles", "canonical_smiles", "valid"]


def _predict(model_dir, input_path, output, *extra) -> int:
    return main(["predict", "--model", model_dir, "--input", input_path, "--output", output, "--no-progress",
                 "--chunk-size", "10", "--batch-size", "4", *extra])


def _read_csv(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"smiles": str, "canonical_smiles": str}, keep_default_na=False,
                       na_values={c: [""] for c in ("p_np", "toxic")})


@pytest.fixture(scope="module")
def graph_model_dirs(tmp_path_factory):
    """A tiny graph-only property model (``downstream_modalities=["graph"]``) saved twice: with a full processor
    and with a graph-only one."""
    from mmsa_hf import MMSAConfig, MMSAForMolecularPropertyPrediction, MMSAImageProcessor, MMSAProcessor

    torch.manual_seed(2)
    config = MMSAConfig.from_preset("tiny", num_labels=2, downstream_modalities=["graph"],
                                    id2label={0: "p_np", 1: "toxic"})
    model = MMSAForMolecularPropertyPrediction(config).eval()
    dirs = {}
    for name, views in (("full", None), ("graph", ("graph",))):
        dirs[name] = tmp_path_factory.mktemp(f"graph_model_{name}")
        model.save_pretrained(dirs[name])
        MMSAProcessor(image_processor=MMSAImageProcessor(image_size=64), views=views).save_pretrained(dirs[name])
    return dirs


def test_predict_csv_equals_parquet(tmp_path, property_dir, inputs, smiles, bad_indices):
    parquet, csv_out = tmp_path / "pred.parquet", tmp_path / "pred.csv"
    assert _predict(property_dir, inputs["csv"], parquet, "--num-proc", "1") == 0
    assert _predict(property_dir, inputs["smi"], csv_out, "--num-proc", "1") == 0
    expected, got = pq.read_table(parquet).to_pandas(), _read_csv(csv_out)
    assert list(got.columns) == FIXED + ["p_np", "toxic"]
    assert got["input_index"].tolist() == list(range(len(smiles)))
    assert got["smiles"].tolist() == smiles and got["valid"].tolist() == expected["valid"].tolist()
    assert got["canonical_smiles"].tolist() == expected["canonical_smiles"].tolist()
    values = got[["p_np", "toxic"]].to_numpy(np.float32)
    np.testing.assert_array_equal(values, expected[["p_np", "toxic"]].to_numpy(np.float32))  # exact float32
    assert np.isnan(values[bad_indices]).all()
    assert csv_out.read_text().splitlines()[1 + bad_indices[0]].endswith(",False,,")  # NaN: empty cells


def test_predict_csv_skip_keeps_the_input_index(tmp_path, property_dir, inputs, good_indices):
    output = tmp_path / "pred.csv"
    assert _predict(property_dir, inputs["csv"], output, "--num-proc", "1", "--on-error", "skip") == 0
    got = _read_csv(output)
    assert got["input_index"].tolist() == good_indices and got["valid"].all()


def test_embed_csv_spreads_the_embedding_over_columns(tmp_path, pretrain_dir, inputs, monkeypatch, capsys):
    parquet, csv_out = tmp_path / "emb.parquet", tmp_path / "emb.csv"
    for output in (parquet, csv_out):
        assert main(["embed", "--model", pretrain_dir, "--input", inputs["csv"], "--output", output,
                     "--num-proc", "1", "--no-progress", "--per-view"]) == 0
    table, got = pq.read_table(parquet), pd.read_csv(csv_out, keep_default_na=False, na_values=[""])
    width = len(table.column("embedding")[0])
    assert list(got.columns[:4]) == FIXED and list(got.columns[4:6]) == ["embedding_0", "embedding_1"]
    assert len(got.columns) == 4 + 4 * width  # unified + graph / image / geometry
    for name in ("embedding", "geometry_embedding"):
        expected = np.asarray(table.column(name).to_pylist(), np.float32)
        np.testing.assert_array_equal(got[[f"{name}_{j}" for j in range(width)]].to_numpy(np.float32), expected)

    monkeypatch.setattr(inference, "MAX_CSV_VALUE_COLUMNS", width)
    code = main(["embed", "--model", pretrain_dir, "--input", inputs["csv"], "--output", tmp_path / "wide.csv",
                 "--per-view", "--no-progress"])
    assert code == 2 and "too wide for a CSV" in capsys.readouterr().err
    assert not (tmp_path / "wide.csv").exists()


def test_graph_only_predict_computes_no_conformer_and_no_image(tmp_path, graph_model_dirs, inputs, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("graph-only predict embedded a conformer or drew a molecule")

    monkeypatch.setattr(rdDistGeom, "EmbedMolecule", boom)
    monkeypatch.setattr(rdDepictor, "Compute2DCoords", boom)
    monkeypatch.setattr(rdMolDraw2D, "MolDraw2DCairo", boom)
    for name, num_proc in (("full", "2"), ("graph", "1")):  # the saved full processor is narrowed to the graph
        output = tmp_path / f"{name}.csv"
        assert _predict(graph_model_dirs[name], inputs["csv"], output, "--num-proc", num_proc) == 0
        report = json.loads(report_path(output).read_text())
        assert report["views"] == ["graph"] and report["bad_rows"] == 4
    assert (tmp_path / "full.csv").read_text() == (tmp_path / "graph.csv").read_text()


def test_graph_only_predict_equals_the_full_path(tmp_path, graph_model_dirs, inputs, smiles, good_indices):
    from mmsa_hf import MMSAForMolecularPropertyPrediction, MMSAProcessor

    output = tmp_path / "pred.csv"
    assert _predict(graph_model_dirs["graph"], inputs["csv"], output, "--num-proc", "1") == 0
    model = MMSAForMolecularPropertyPrediction.from_pretrained(graph_model_dirs["full"]).eval()
    full_processor = MMSAProcessor.from_pretrained(graph_model_dirs["full"])
    assert full_processor.views == ("graph", "image", "geometry")
    full_batch = full_processor([smiles[i] for i in good_indices])
    assert "pos" in full_batch and "pixel_values" in full_batch
    with torch.no_grad():
        expected = model(**full_batch).predictions.numpy()
    got = _read_csv(output)[["p_np", "toxic"]].to_numpy(np.float32)
    np.testing.assert_allclose(got[good_indices], expected, rtol=0, atol=1e-6)


def test_featurizing_ahead_in_two_processes_keeps_rows_in_order(tmp_path, graph_model_dirs, inputs, good_indices):
    """Many small chunks featurized by a 2-process pool ahead of the model give the 1-process output exactly."""
    outputs = {}
    for num_proc in ("1", "2"):
        outputs[num_proc] = tmp_path / f"pred_{num_proc}.csv"
        assert main(["predict", "--model", graph_model_dirs["graph"], "--input", inputs["csv"],
                     "--output", outputs[num_proc], "--no-progress", "--chunk-size", "3", "--batch-size", "2",
                     "--num-proc", num_proc, "--on-error", "skip"]) == 0
    assert outputs["1"].read_text() == outputs["2"].read_text()
    assert _read_csv(outputs["2"])["input_index"].tolist() == good_indices
