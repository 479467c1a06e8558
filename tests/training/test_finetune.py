"""Fine-tuning: output files, seeds, and label normalisation round trip."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest
import torch

from mmsa_hf.training.finetune import parse_args, run_finetuning

from mmsa_training_testutils import REPO


@pytest.fixture(autouse=True)
def _datasets_cache(training_cache, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", training_cache)
    torch.set_num_threads(1)


def _finetune(tmp_path, csv, *extra):
    args = parse_args([
        "--from_scratch", "--config", "tiny", "--dataset", str(csv), "--label_columns", "p_np",
        "--task_type", "classification", "--split", "random", "--epochs", "2", "--batch_size", "16",
        "--output_dir", str(tmp_path), "--cpu", *extra,
    ])
    return run_finetuning(args)


def test_two_epochs_on_100_bbbp_molecules_write_every_output(tmp_path, bbbp_subset_csv):
    results = _finetune(tmp_path, bbbp_subset_csv, "--seeds", "0")
    for name in ("results.json", "results.md"):
        assert (tmp_path / name).is_file()
    run_dir = tmp_path / "seed_0"
    for name in ("validation_curves.png", "test_roc.png", "curves.jsonl", "best/model.safetensors",
                 "best/config.json", "best/processor_config.json"):
        assert (run_dir / name).is_file(), name
    saved = json.loads((tmp_path / "results.json").read_text())
    indices = saved["split"]["indices"]
    assert sorted(indices["train"] + indices["validation"] + indices["test"]) == list(range(100))
    run = saved["runs"][0]
    assert run["epochs_run"] == 2 and run["best_epoch"] in (0, 1)
    assert run["test"]["roc_auc"] == pytest.approx(_saved_model_test_roc(run_dir / "best", bbbp_subset_csv,
                                                                         indices["test"]), abs=1e-6)
    assert "± " in (tmp_path / "results.md").read_text()
    assert results["summary"]["metric"] == "roc_auc"


def _saved_model_test_roc(folder, csv, test_rows) -> float:
    """sklearn's ROC-AUC of the saved best-validation model on the test rows, recomputed from scratch."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score
    from transformers import AutoProcessor

    from mmsa_hf.modeling import MMSAForMolecularPropertyPrediction

    table = pd.read_csv(csv).iloc[sorted(test_rows)]
    model = MMSAForMolecularPropertyPrediction.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    with torch.no_grad():
        scores = model(**processor(table["smiles"].tolist())).predictions[:, 0]
    return roc_auc_score(table["p_np"].to_numpy(), scores.numpy())


def test_seeds_give_distinct_runs_and_the_same_seed_reproduces(tmp_path, bbbp_subset_csv):
    first = _finetune(tmp_path / "a", bbbp_subset_csv, "--seeds", "0", "1", "--no_save_checkpoints")
    again = _finetune(tmp_path / "b", bbbp_subset_csv, "--seeds", "0", "--no_save_checkpoints")
    loss = lambda run: [c["train_loss"] for c in run["curves"]]  # noqa: E731
    assert loss(first["runs"][0]) != loss(first["runs"][1])
    assert loss(first["runs"][0]) == loss(again["runs"][0])
    assert first["runs"][0]["test"] == again["runs"][0]["test"]


def test_regression_label_normalisation_round_trips(tmp_path):
    path = tmp_path / "esol60.csv"
    with gzip.open(REPO / "mmsa_hf" / "data" / "moleculenet" / "esol.csv.gz", "rt") as handle:
        path.write_text("".join(next(handle) for _ in range(61)))
    args = parse_args([
        "--from_scratch", "--config", "tiny", "--dataset", str(path), "--label_columns", "logp",
        "--task_type", "regression", "--split", "random", "--epochs", "1", "--seeds", "0",
        "--output_dir", str(tmp_path / "out"), "--cpu",
    ])
    results = run_finetuning(args)
    train_rows = results["split"]["indices"]["train"]
    import pandas as pd

    labels = pd.read_csv(path)["logp"].to_numpy()[train_rows]
    from mmsa_hf import MMSAForMolecularPropertyPrediction

    model = MMSAForMolecularPropertyPrediction.from_pretrained(tmp_path / "out" / "seed_0" / "best")
    assert model.config.problem_type == "regression"
    assert np.allclose(model.config.label_mean, [labels.mean()])
    assert np.allclose(model.config.label_std, [labels.std()])
    logits = torch.tensor([[0.0], [1.0]])
    expected = torch.tensor([[labels.mean()], [labels.mean() + labels.std()]], dtype=torch.float32)
    assert torch.allclose(model.predict_from_logits(logits).float(), expected, atol=1e-4)
    assert results["summary"]["metric"] == "rmse" and results["summary"]["test_mean"] > 0
