"""The ``mmsa`` command line: help texts, ``embed`` / ``predict`` outputs against the model run directly, the
on_error policies, chunking, error messages, and ``push`` to the local test Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mmsa_hf.cli import main
from mmsa_hf.inference import prediction_columns, report_path, sidecar_path

VIEWS = ("graph", "image", "geometry")
ATOL = 1e-5  # batch composition changes BLAS blocking: ~1e-6 differences between batch sizes


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_XET="1", OMP_NUM_THREADS="1")
    env.pop("HF_ENDPOINT", None)
    return env


def _mmsa_command() -> list[str]:
    script = Path(sys.executable).parent / "mmsa"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mmsa_hf.cli"]


def _run_main(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _read_report(output: Path) -> dict:
    return json.loads(report_path(output).read_text())


def _embedding_matrix(table, column: str) -> np.ndarray:
    return np.asarray(table.column(column).to_pylist(), dtype=np.float32)


# ------------------------------------------------------------------------------------------------------------------
# help
# ------------------------------------------------------------------------------------------------------------------


def test_mmsa_help_subprocess_lists_commands_and_examples():
    proc = subprocess.run([*_mmsa_command(), "--help"], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("pretrain", "finetune", "embed", "predict", "push"):
        assert command in proc.stdout
    assert "examples:" in proc.stdout and "mmsa embed --model" in proc.stdout


@pytest.mark.parametrize(
    "command, example",
    [
        ("embed", "mmsa embed --model"),
        ("predict", "mmsa predict --model"),
        ("push", "mmsa push --model"),
        ("pretrain", "scripts/pretrain.py --config small"),  # the training script's own epilog
        ("finetune", "mmsa finetune --from_scratch"),
    ],
)
def test_subcommand_help_exits_0_with_examples(command, example, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and example in out


# ------------------------------------------------------------------------------------------------------------------
# embed
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chunked_parquet(tmp_path_factory, pretrain_dir, inputs):
    """``mmsa embed`` (mask policy, per view) in chunks of 7 molecules, 2 featurization processes, batches of 4."""
    output = tmp_path_factory.mktemp("embed") / "emb.parquet"
    code = main(["embed", "--model", str(pretrain_dir), "--input", str(inputs["csv"]), "--output", str(output),
                 "--per-view", "--chunk-size", "7", "--batch-size", "4", "--num-proc", "2", "--no-progress"])
    assert code == 0
    return output


def test_embed_parquet_masks_bad_rows_and_matches_direct_model(chunked_parquet, smiles, bad_indices, good_indices,
                                                               reference_embeddings):
    table = pq.read_table(chunked_parquet)
    assert table.num_rows == len(smiles)  # one output row per input row
    assert table.column("input_index").to_pylist() == list(range(len(smiles)))
    assert table.column("smiles").to_pylist() == smiles
    valid = table.column("valid").to_pylist()
    assert [i for i, v in enumerate(valid) if not v] == bad_indices
    assert all(table.column("canonical_smiles")[i].as_py() == "" for i in bad_indices)
    for column in ("embedding", *(f"{v}_embedding" for v in VIEWS)):
        assert column in table.column_names
        values = _embedding_matrix(table, column)
        assert values.shape == (len(smiles), 32)
        assert np.isnan(values[bad_indices]).all()
        np.testing.assert_allclose(values[good_indices], reference_embeddings[column], atol=ATOL, rtol=0)

    report = _read_report(chunked_parquet)
    assert report["rows"] == report["rows_written"] == len(smiles)
    assert report["bad_rows"] == len(bad_indices) and report["masked_indices"] == bad_indices
    assert report["skipped_indices"] == []
    details = {row["input_index"]: row for row in report["bad_row_details"]}
    assert sorted(details) == bad_indices
    assert details[3]["smiles"] == "" and details[9]["smiles"] == "C1CC"
    assert all(row["error"] for row in details.values())  # the reason is reported
    assert report["num_proc"] == 2 and report["chunk_size"] == 7


def test_embed_npy_in_one_chunk_equals_chunked_run(tmp_path, pretrain_dir, inputs, chunked_parquet, smiles,
                                                   bad_indices):
    output = tmp_path / "emb.npy"
    code = main(["embed", "--model", pretrain_dir, "--input", inputs["csv"], "--output", output, "--per-view",
                 "--chunk-size", "1000", "--batch-size", "64", "--num-proc", "1", "--no-progress"])
    assert code == 0
    chunked = pq.read_table(chunked_parquet)
    for column in ("embedding", *(f"{v}_embedding" for v in VIEWS)):
        path = output if column == "embedding" else sidecar_path(output, column)
        values = np.load(path)
        assert values.dtype == np.float32 and values.shape == (len(smiles), 32)
        assert np.isnan(values[bad_indices]).all()
        np.testing.assert_allclose(values, _embedding_matrix(chunked, column), atol=ATOL, rtol=0)
    assert not sidecar_path(output, "indices").exists()  # mask policy: row i is input row i
    report = _read_report(output)
    assert report["masked_indices"] == bad_indices
    assert sorted(report["files"]) == sorted(
        [str(output), str(report_path(output))] + [str(sidecar_path(output, f"{v}_embedding")) for v in VIEWS])


def test_embed_smi_input_skip_policy_npy_writes_indices(tmp_path, pretrain_dir, inputs, good_indices, bad_indices,
                                                        reference_embeddings):
    output = tmp_path / "out" / "emb.npy"  # missing parent folder is created
    code = main(["embed", "--model", pretrain_dir, "--input", inputs["smi"], "--output", output,
                 "--on-error", "skip", "--chunk-size", "5", "--num-proc", "2", "--no-progress"])
    assert code == 0
    values = np.load(output)
    indices = np.load(sidecar_path(output, "indices"))
    assert values.shape == (len(good_indices), 32) and not np.isnan(values).any()
    assert indices.tolist() == good_indices
    np.testing.assert_allclose(values, reference_embeddings["embedding"], atol=ATOL, rtol=0)
    report = _read_report(output)
    assert report["rows"] == len(good_indices) + len(bad_indices)
    assert report["rows_written"] == len(good_indices)
    assert report["skipped_indices"] == bad_indices and report["masked_indices"] == []
    assert not list(output.parent.glob("*.partial"))  # scratch files removed


def test_embed_skip_policy_parquet_input_index_maps_back(tmp_path, pretrain_dir, inputs, smiles, good_indices,
                                                         reference_embeddings):
    output = tmp_path / "emb.parquet"
    code = main(["embed", "--model", pretrain_dir, "--input", inputs["csv"], "--smiles-column", "smiles",
                 "--output", output, "--on-error", "skip", "--chunk-size", "7", "--num-proc", "1", "--no-progress"])
    assert code == 0
    table = pq.read_table(output)
    assert table.num_rows == len(good_indices)
    index = table.column("input_index").to_pylist()
    assert index == good_indices
    assert table.column("smiles").to_pylist() == [smiles[i] for i in index]
    assert all(table.column("valid").to_pylist())
    np.testing.assert_allclose(_embedding_matrix(table, "embedding"), reference_embeddings["embedding"],
                               atol=ATOL, rtol=0)
    assert "graph_embedding" not in table.column_names  # no --per-view


def test_embed_console_script_end_to_end(tmp_path, pretrain_dir, inputs, bad_indices, good_indices,
                                         reference_embeddings):
    output = tmp_path / "emb.npy"
    proc = subprocess.run(
        [*_mmsa_command(), "embed", "--model", str(pretrain_dir), "--input", str(inputs["csv"]),
         "--output", str(output), "--num-proc", "2"],
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["rows"] == len(good_indices) + len(bad_indices) and summary["bad_indices"] == bad_indices
    assert "mmsa embed" in proc.stderr  # the tqdm bar
    values = np.load(output)
    np.testing.assert_allclose(values[good_indices], reference_embeddings["embedding"], atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# predict
# ------------------------------------------------------------------------------------------------------------------


def test_predict_matches_predict_from_logits(tmp_path, property_dir, inputs, smiles, good_indices, bad_indices):
    from mmsa_hf import MMSAForMolecularPropertyPrediction, MMSAProcessor

    output = tmp_path / "pred.parquet"
    code = main(["predict", "--model", property_dir, "--input", inputs["csv"], "--output", output,
                 "--chunk-size", "10", "--batch-size", "3", "--num-proc", "1", "--no-progress"])
    assert code == 0
    model = MMSAForMolecularPropertyPrediction.from_pretrained(property_dir).eval()
    processor = MMSAProcessor.from_pretrained(property_dir)
    with torch.no_grad():
        expected = model.predict_from_logits(model(**processor([smiles[i] for i in good_indices])).logits).numpy()

    table = pq.read_table(output)
    assert table.column_names[-2:] == ["p_np", "toxic"]  # task names from config.id2label
    values = np.stack([np.asarray(table.column(c).to_pylist(), np.float32) for c in ("p_np", "toxic")], 1)
    assert values.shape == (len(smiles), 2)
    assert np.isnan(values[bad_indices]).all()
    np.testing.assert_allclose(values[good_indices], expected, atol=ATOL, rtol=0)
    assert ((values[good_indices] > 0) & (values[good_indices] < 1)).all()  # probabilities
    report = _read_report(output)
    assert report["columns"] == ["p_np", "toxic"] and report["masked_indices"] == bad_indices

    npy = tmp_path / "pred.npy"
    assert main(["predict", "--model", property_dir, "--input", inputs["csv"], "--output", npy,
                 "--num-proc", "1", "--no-progress"]) == 0
    np.testing.assert_allclose(np.load(npy), values, atol=ATOL, rtol=0)


def test_prediction_columns_fall_back_to_task_index():
    from mmsa_hf import MMSAConfig

    assert prediction_columns(MMSAConfig.from_preset("tiny", num_labels=3)) == ["task_0", "task_1", "task_2"]
    named = MMSAConfig.from_preset("tiny", id2label={0: "NR-AR", 1: "SR-p53"})
    assert prediction_columns(named) == ["NR-AR", "SR-p53"]


def test_predict_refuses_a_pretraining_checkpoint(tmp_path, pretrain_dir, inputs, capsys):
    output = tmp_path / "pred.parquet"
    code, _, err = _run_main(["predict", "--model", pretrain_dir, "--input", inputs["csv"], "--output", output],
                             capsys)
    assert code == 2
    assert "MMSAForMolecularPropertyPrediction" in err and "MMSAForPreTraining" in err
    assert not output.exists()


# ------------------------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------------------------


def test_missing_input_file(tmp_path, pretrain_dir, capsys):
    missing = tmp_path / "nope.csv"
    code, _, err = _run_main(["embed", "--model", pretrain_dir, "--input", missing, "--output", tmp_path / "e.npy"],
                             capsys)
    assert code == 2 and "input file not found" in err and str(missing) in err
    assert not (tmp_path / "e.npy").exists()


def test_csv_without_smiles_column(tmp_path, pretrain_dir, inputs, capsys):
    code, _, err = _run_main(["embed", "--model", pretrain_dir, "--input", inputs["no_smiles"],
                              "--output", tmp_path / "e.parquet"], capsys)
    assert code == 2
    assert str(inputs["no_smiles"]) in err and "['name', 'structure']" in err and "--smiles-column" in err
    code, _, err = _run_main(["embed", "--model", pretrain_dir, "--input", inputs["csv"], "--smiles-column", "SMI",
                              "--output", tmp_path / "e.parquet"], capsys)
    assert code == 2 and "'SMI'" in err and str(inputs["csv"]) in err and "'smiles'" in err
    assert not (tmp_path / "e.parquet").exists()


def test_unsupported_output_extension(tmp_path, pretrain_dir, inputs, capsys):
    code, _, err = _run_main(["embed", "--model", pretrain_dir, "--input", inputs["csv"],
                              "--output", tmp_path / "emb.txt"], capsys)
    assert code == 2 and "emb.txt" in err and ".parquet, .npy or .csv" in err


def test_raise_policy_names_the_row_and_removes_partial_output(tmp_path, pretrain_dir, inputs, capsys):
    output = tmp_path / "emb.npy"
    code, _, err = _run_main(["embed", "--model", pretrain_dir, "--input", inputs["csv"], "--output", output,
                              "--on-error", "raise", "--num-proc", "1", "--no-progress"], capsys)
    assert code == 2 and "row 3" in err and "--on-error" in err
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------------------------
# push
# ------------------------------------------------------------------------------------------------------------------


def test_push_via_cli_then_load_in_clean_cache(hub, pretrain_dir, property_dir, capsys):
    from huggingface_hub import HfApi

    from mmsa_hf import MMSAForMolecularPropertyPrediction, MMSAForPreTraining
    from mmsa_hf.hub import load_model, load_processor

    repo = "test-user/mmsa-cli-tiny"
    code, out, err = _run_main(["push", "--model", pretrain_dir, "--repo-id", repo], capsys)
    assert code == 0, err
    pushed = json.loads(out)
    assert pushed["class"] == "MMSAForPreTraining"
    api = HfApi()
    commits = api.list_repo_commits(repo)
    assert len(commits) == 2 and commits[0].commit_id == pushed["commit"]  # initial commit + ONE push commit
    files = set(api.list_repo_files(repo))
    assert {"model.safetensors", "config.json", "modeling_mmsa.py", "processor_config.json", "processing_mmsa.py",
            "README.md"} <= files

    assert not any(hub.cache_dir.iterdir())  # the pull starts from an empty cache
    loaded = load_model(repo, model_class=MMSAForPreTraining)
    original = MMSAForPreTraining.from_pretrained(pretrain_dir)
    assert loaded.config.architectures == ["MMSAForPreTraining"]
    state, expected = loaded.state_dict(), original.state_dict()
    assert sorted(state) == sorted(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert load_processor(repo).image_processor.image_size == 64

    prop_repo = "test-user/mmsa-cli-property"
    code, out, err = _run_main(["push", "--model", property_dir, "--repo-id", prop_repo, "--private"], capsys)
    assert code == 0, err
    assert json.loads(out)["class"] == "MMSAForMolecularPropertyPrediction"
    loaded = load_model(prop_repo, model_class=MMSAForMolecularPropertyPrediction)
    expected = MMSAForMolecularPropertyPrediction.from_pretrained(property_dir).state_dict()
    assert all(torch.equal(loaded.state_dict()[k], expected[k]) for k in expected)
    assert loaded.config.id2label == {0: "p_np", 1: "toxic"}


def test_push_refuses_a_missing_directory(tmp_path, capsys):
    code, _, err = _run_main(["push", "--model", tmp_path / "missing", "--repo-id", "test-user/x"], capsys)
    assert code == 2 and "does not exist" in err
