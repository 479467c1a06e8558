"""Pretraining through ``accelerate launch``: outputs, loading, and exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmsa_training_testutils import accelerate_cmd, accelerate_env

COMMON = ["--config", "tiny", "--batch_size", "16", "--log_every", "1", "--seed", "3"]


def _run(args, cache, timeout=600):
    result = subprocess.run(accelerate_cmd(*args), env=accelerate_env(cache), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_pretrain_writes_a_loadable_checkpoint(tmp_path, corpus_csv, training_cache):
    out = tmp_path / "run"
    result = _run([*COMMON, "--corpus", str(corpus_csv), "--max_steps", "4", "--output_dir", str(out),
                   "--checkpointing_steps", "2"], training_cache)
    final = out / "final"
    for name in ("config.json", "model.safetensors", "processor_config.json", "training_info.json"):
        assert (final / name).is_file(), name
    for name in ("run_config.json", "corpus.json", "loss_curves.png", "metrics.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    assert str(final) in result.stdout and "finetune" in result.stdout

    import mmsa_hf  # noqa: F401  (registers the Auto classes)
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(final)
    assert type(model).__name__ == "MMSAModel"
    saved = load_file(final / "model.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved["mmsa." + name]), name
    processor = AutoProcessor.from_pretrained(final)
    assert processor.image_processor.image_size == 64  # the tiny preset's depiction size

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for record in records:
        for key in ("loss", "contrastive_loss", "anchors_in_use"):
            assert key in record and record[key] == record[key], (key, record)
    corpus = json.loads((out / "corpus.json").read_text())
    assert corpus["molecules_used"] > 0


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, corpus_csv, training_cache):
    args = [*COMMON, "--corpus", str(corpus_csv), "--max_steps", "40", "--checkpointing_steps", "3"]
    reference = tmp_path / "reference"
    _run([*args, "--output_dir", str(reference)], training_cache)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(accelerate_cmd(*args, "--output_dir", str(killed)), env=accelerate_env(training_cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = killed / "checkpoints" / "checkpoint_0" / "mmsa_training_state.json"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "final").exists()

    _run([*args, "--output_dir", str(killed), "--resume_from_checkpoint", "latest"], training_cache)
    expected = load_file(reference / "final" / "model.safetensors")
    resumed = load_file(killed / "final" / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41)), "the metrics log has gaps or repeats after resume"


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, corpus_csv, training_cache):
    result = subprocess.run(
        accelerate_cmd(*COMMON, "--corpus", str(corpus_csv), "--max_steps", "1", "--output_dir",
                       str(tmp_path / "none"), "--resume_from_checkpoint", "latest"),
        env=accelerate_env(training_cache), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode != 0
    assert "no checkpoint found" in result.stderr
