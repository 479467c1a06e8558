"""benchmarks/pretrain_speed.py's report: what the bf16 line claims depends on whether bf16 actually ran."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import pretrain_speed as speed  # noqa: E402

EVENING = REPO / "benchmarks" / "results" / "pretrain_speed_rerun_2026-12-03_evening.json"
NOON = REPO / "benchmarks" / "results" / "pretrain_speed_rerun_2026-12-03_noon.json"


def _small(path: Path) -> dict:
    return json.loads(path.read_text())["speed"]["small"]


def test_bf16_line_reports_a_gain_when_new_ran_in_bf16():
    result = _small(NOON)
    assert result["bf16_autocast_in_new"] is True
    line = speed.bf16_line(result)
    assert line.startswith("bf16 autocast gain")
    assert f"{result['bf16_gain_step_cpu']}x CPU time" in line


def test_bf16_line_calls_the_gap_noise_when_the_cpu_has_no_bf16():
    result = _small(EVENING)
    assert result["bf16_autocast_in_new"] is False
    line = speed.bf16_line(result)
    assert "not a bf16 effect" in line and "gain" not in line
    assert f"{result['bf16_gain_step_cpu']}x CPU time" in line


def test_speed_table_uses_the_bf16_line():
    result = _small(EVENING)
    assert speed.bf16_line(result) in speed.speed_table("small", result)


def test_new_overrides_change_the_new_variants_only():
    args = speed.parse_args(["--new_overrides", '{"geometry_shared_filter_network": true}', "--new_image_size", "96"])
    specs = {spec["name"]: spec for spec in speed.preset_variant_specs("small", args, bf16=False)}
    assert specs["today"]["overrides"] == speed.TODAY["small"]
    assert specs["today"]["image_size"] == speed.TODAY_IMAGE_SIZE["small"]
    for name in ("new_fp32", "new"):
        assert specs[name]["overrides"] == {"geometry_shared_filter_network": True}
        assert specs[name]["image_size"] == 96
    specs["new"]["overrides"]["geometry_cutoff"] = 3.0  # each variant owns its dict
    assert "geometry_cutoff" not in specs["new_fp32"]["overrides"]


def test_only_the_new_variants_compile_geometry_unless_told_not_to():
    default = speed.preset_variant_specs("small", speed.parse_args([]), bf16=False)
    assert [s["compile_geometry"] for s in default] == [False, True, True]
    eager = speed.preset_variant_specs("small", speed.parse_args(["--no_compile_geometry"]), bf16=False)
    assert [s["compile_geometry"] for s in eager] == [False, False, False]
    assert speed.TODAY["small"]["image_stem_kernel_size"] == 7  # today's is the stem before issue 10


def _proxy_run(image_mrr: float, geometry_mrr: float) -> dict:
    return {"graph_to_image": {"top1": 0.0, "top5": 0.0, "mrr": image_mrr},
            "graph_to_geometry": {"top1": 0.0, "top5": 0.0, "mrr": geometry_mrr}}


def test_proxy_score_is_the_mean_mrr_and_the_difference_is_paired_by_seed():
    proxy = {"runs": {"today": [_proxy_run(0.4, 0.2), _proxy_run(0.2, 0.2), _proxy_run(0.3, 0.1)],
                      "new": [_proxy_run(0.3, 0.1), _proxy_run(0.2, 0.1), _proxy_run(0.2, 0.1)]}}
    scores = speed.proxy_scores(proxy)
    assert scores["today"] == pytest.approx([0.3, 0.2, 0.2]) and scores["new"] == pytest.approx([0.2, 0.15, 0.15])
    line = speed.proxy_score_lines(proxy)[0]
    assert "today 0.2333, new 0.1667" in line and "**-0.0667**" in line and "over 3 seeds" in line
    assert speed.proxy_score_lines({"runs": {"today": [_proxy_run(0.4, 0.2)]}}) == []  # nothing to pair


def _proxy(seeds, overrides=None, keep_key=True):
    proxy = {"steps": 300, "batch_size": 64, "train_molecules": 4000, "held_out_molecules": 256,
             "image_sizes": {"today": 128, "new": 128}, "seeds": list(seeds),
             "runs": {"today": [_proxy_run(0.3, 0.3) for _ in seeds], "new": [_proxy_run(0.2, 0.2) for _ in seeds]}}
    if keep_key:
        proxy["new_overrides"] = overrides or {}
    return proxy


def test_merge_proxy_adds_seeds_of_the_same_protocol_only():
    old_file = _proxy([0], keep_key=False)  # written before --new_overrides existed: it ran with none
    merged = speed.merge_proxy(old_file, _proxy([1]))
    assert merged["seeds"] == [0, 1] and len(merged["runs"]["new"]) == 2
    other = speed.merge_proxy(_proxy([0]), _proxy([1], {"geometry_shared_filter_network": True}))
    assert other["seeds"] == [1]  # another candidate: not mixed with the old seeds
