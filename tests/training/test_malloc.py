"""``keep_freed_memory_in_process``: glibc keeps a training step's freed activations instead of page-faulting
them in again (measured by the minor page faults of a step-like allocation pattern, in fresh processes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmsa_hf.training.malloc import _glibc, keep_freed_memory_in_process

PROBE = """
import json, resource, sys, torch
outcome = None
if sys.argv[1] == "keep":
    from mmsa_hf.training.malloc import keep_freed_memory_in_process
    outcome = keep_freed_memory_in_process()
def step(k):
    size = 1_000_000 + 37_000 * (k % 5)  # 40 activations of ~4 MB alive at once; sizes vary as atom counts do
    activations = [torch.ones(size) for _ in range(40)]
    del activations
for k in range(5):
    step(k)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for k in range(5, 15):
    step(k)
print(json.dumps({"outcome": outcome, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": ""}, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_glibc() is None, reason="mallopt is glibc's")
def test_freed_step_memory_is_reused_without_page_faults():
    default, kept = _probe("default"), _probe("keep")
    assert kept["outcome"]["applied"] and kept["outcome"]["reason"].startswith("glibc")
    # glibc's defaults give the freed heap back and fault it in again (tens of thousands of 4 KB pages in 10 steps)
    assert default["faults"] > 10_000
    assert kept["faults"] < 0.05 * default["faults"]


def test_outcome_says_whether_it_applied():
    outcome = keep_freed_memory_in_process()
    assert outcome["applied"] is (_glibc() is not None)
    assert outcome["reason"]


def test_training_commands_keep_freed_memory_unless_told_not_to():
    from mmsa_hf.training import finetune, pretrain

    base = ["--from_scratch", "--config", "tiny", "--dataset", "bbbp"]
    assert finetune.parse_args(base).keep_freed_memory is True
    assert finetune.parse_args(base + ["--no_keep_freed_memory"]).keep_freed_memory is False
    assert pretrain.parse_args([]).keep_freed_memory is True
    assert pretrain.parse_args(["--no_keep_freed_memory"]).keep_freed_memory is False


def test_training_runs_apply_it_on_the_cpu_only_when_asked():
    import torch

    from mmsa_hf.training.malloc import keep_freed_memory_for_run

    assert keep_freed_memory_for_run(False, torch.device("cpu")) is None
    assert keep_freed_memory_for_run(True, torch.device("meta")) is None  # not a CPU run: glibc is left alone
    assert keep_freed_memory_for_run(True, torch.device("cpu"))["applied"] is (_glibc() is not None)
