"""benchmarks/pretrain_speed.py's worker path: a worker times every variant it was given on the same batches, the
parent merges the rounds into one report, and a worker that cannot start says why instead of hanging.

The worker runs in a thread of this process (the benchmark spawns processes; a spawned process would not see the
small molecule sample patched in here). Every variant runs under glibc's defaults, so the test process keeps them.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from pathlib import Path

import pytest
from datasets import Dataset

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import pretrain_speed as speed  # noqa: E402
from mmsa_hf.data import featurize_dataset  # noqa: E402
from mmsa_hf.training.common import build_processor  # noqa: E402

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC", "OC(=O)c1ccccc1", "CC(C)Cc1ccc(C)cc1",
          "C1CCNCC1", "ClCCCl"]
BATCH = 4


@pytest.fixture(scope="module")
def sample():
    processor = build_processor(image_size=speed.TODAY_IMAGE_SIZE["small"])
    rows = featurize_dataset(Dataset.from_dict({"smiles": SMILES}), processor, num_proc=1, on_error="raise")
    return processor, rows


@pytest.fixture
def args():
    # eager 3D message passing: compiling it would take most of this test's time (its own test is in tests/modeling)
    return speed.parse_args(["--presets", "small", "--batch_size", str(BATCH), "--no_keep_freed_memory",
                             "--no_compile_geometry"])


def _run_worker(specs, args, sample, monkeypatch, requests):
    """Start ``variant_worker`` on ``specs`` in a thread, send ``requests``, return the replies."""
    monkeypatch.setattr(speed, "speed_molecules", lambda preset, a, sizes=None: {s: (*sample, None) for s in sizes})
    parent, child = multiprocessing.Pipe()
    worker = threading.Thread(target=speed.variant_worker, args=(child, "small", specs, vars(args)), daemon=True)
    worker.start()
    replies = []
    for request in requests:
        parent.send(request)
        replies.append(parent.recv())
    parent.send(None)
    worker.join(timeout=60)
    assert not worker.is_alive(), "the worker did not stop when told to"
    return replies


def test_a_worker_times_every_variant_on_the_same_batches_and_the_report_merges_rounds(args, sample, monkeypatch):
    specs = speed.preset_variant_specs("small", args, bf16=False)
    assert [s["keep_freed_memory"] for s in specs] == [False, False, False]
    assert [s["compile_geometry"] for s in specs] == [False, False, False]
    replies = _run_worker(specs, args, sample, monkeypatch, [(1, 0), (1, BATCH)])
    times = {s["name"]: {part: [] for part in speed.PARTS + ("step_page_faults",)} for s in specs}
    collate_s = {s["name"]: [] for s in specs}
    for reply in replies:
        assert set(reply["times"]) == {"today", "new_fp32", "new"}
        speed._merge_round(reply, times, collate_s)
    for name in times:
        for part in speed.PARTS:
            assert len(times[name][part]) == 2 and all(wall > 0 and cpu > 0 for wall, cpu in times[name][part])
        assert len(times[name]["step_page_faults"]) == 2 and len(collate_s[name]) == 2
    result = speed.report_preset("small", specs, times, collate_s, BATCH, bf16=False)
    today, new = result["variants"]["today"], result["variants"]["new_fp32"]
    assert today["geometry"]["geometry_num_filters"] == speed.TODAY["small"]["geometry_num_filters"]
    assert (today["pool_first_stem"], today["channels_last"]) == (False, False)
    assert (new["pool_first_stem"], new["channels_last"]) == (True, True)
    assert new["parts"]["step"]["samples"] == 2
    step = new["parts"]["step"]
    assert step["molecules_per_cpu_s"] == pytest.approx(1000 * BATCH / step["cpu_median_ms"], rel=0.01, abs=0.05)
    expected = today["parts"]["step"]["cpu_median_ms"] / result["variants"]["new"]["parts"]["step"]["cpu_median_ms"]
    assert result["speedup_new_vs_today_cpu"]["step"] == pytest.approx(expected, abs=0.01)


def test_a_worker_that_cannot_build_its_variants_reports_the_error(args, sample, monkeypatch):
    bad = dict(speed.preset_variant_specs("small", args, bf16=False)[1], overrides={"image_stem": "no-such-stem"})
    (reply,) = _run_worker([bad], args, sample, monkeypatch, [(1, 0)])
    assert "image_stem" in reply["error"]
    with pytest.raises(RuntimeError, match="speed worker failed"):
        speed._merge_round(reply, {}, {})
