"""Thread policy (torch intra-op threads per process, ``datasets`` workers) and the bf16-on-CPU check."""

from __future__ import annotations

import logging

import pytest
import torch

from mmsa_hf.training import common
from mmsa_hf.training.common import (
    apply_thread_policy,
    available_cores,
    capped_num_proc,
    resolve_mixed_precision,
    thread_policy,
)


@pytest.fixture
def eight_cores(monkeypatch):
    """A machine with 8 usable cores, no OMP_NUM_THREADS, no launcher environment."""
    monkeypatch.setattr(common, "available_cores", lambda: 8)
    for name in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def test_cores_are_split_between_the_processes(eight_cores):
    assert thread_policy()["threads"] == 8
    assert thread_policy(num_processes=2)["threads"] == 4
    assert thread_policy(num_processes=3)["threads"] == 2
    assert thread_policy(num_processes=16)["threads"] == 1  # never 0


def test_launcher_world_size_and_dataloader_workers(eight_cores, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    policy = thread_policy(num_processes=1, dataloader_workers=1)
    assert policy["processes"] == 4 and policy["threads"] == 1
    assert policy["max_num_proc"] == 4


def test_omp_num_threads_is_obeyed(eight_cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    policy = thread_policy(num_processes=2, dataloader_workers=2)
    assert (policy["threads"], policy["source"]) == (3, "OMP_NUM_THREADS")
    assert policy["max_num_proc"] == 6
    monkeypatch.setenv("OMP_NUM_THREADS", "not-a-number")
    assert thread_policy(num_processes=2)["threads"] == 4


def test_apply_sets_torch_threads(eight_cores, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        assert apply_thread_policy()["threads"] == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_datasets_workers_stay_within_the_share(eight_cores, monkeypatch, caplog):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    policy = thread_policy()
    with caplog.at_level(logging.WARNING, logger="mmsa_hf.training"):
        assert capped_num_proc(4, policy) == 1
    assert "num_proc 4 -> 1" in caplog.text
    assert capped_num_proc(None, policy) == 1
    assert capped_num_proc(2, thread_policy(num_processes=1) | {"max_num_proc": 8}) == 2


def test_available_cores_reads_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(common.os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    assert 1 <= available_cores() <= 2


def test_bf16_where_supported_and_a_clear_fallback_elsewhere(monkeypatch, caplog):
    monkeypatch.setattr(common, "cpu_supports_bf16", lambda: True)
    assert resolve_mixed_precision("bf16", on_cpu=True) == "bf16"
    monkeypatch.setattr(common, "cpu_supports_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="mmsa_hf.training"):
        assert resolve_mixed_precision("bf16", on_cpu=True) == "no"
    assert "AVX512-BF16" in caplog.text and "fp32" in caplog.text
    assert resolve_mixed_precision("bf16", on_cpu=False) == "bf16"  # CUDA decides for itself
    assert resolve_mixed_precision("no", on_cpu=True) == "no"


def test_cpu_supports_bf16_is_a_bool():
    assert isinstance(common.cpu_supports_bf16(), bool)


@pytest.mark.skipif(not common.cpu_supports_bf16(), reason="this CPU has no native bf16")
def test_pretrain_with_bf16_on_cpu(tmp_path, corpus_csv, training_cache):
    import json
    import subprocess

    from mmsa_training_testutils import accelerate_cmd, accelerate_env

    out = tmp_path / "run"
    args = ["--config", "tiny", "--batch_size", "16", "--log_every", "1", "--max_steps", "2", "--corpus",
            str(corpus_csv), "--output_dir", str(out), "--mixed_precision", "bf16", "--num_proc", "4"]
    result = subprocess.run(accelerate_cmd(*args), env=accelerate_env(training_cache), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["args"]["mixed_precision"] == "bf16"
    assert run_config["environment"]["num_threads"] == 1  # OMP_NUM_THREADS=1 in the test environment
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["loss"] == r["loss"] for r in records)  # finite, not NaN
