"""benchmarks/compare_rows.py on the committed reference results: the paired difference is the mean of the per-seed
differences of the rows' multi-set averages, over the seeds both rows have."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import compare_rows  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "moleculenet_v2_graph.json"


@pytest.fixture(scope="module")
def results():
    return json.loads(RESULTS.read_text())


def _average(results, row, dataset_split, seed):
    """The 5-set average of one seed, straight from the cells at the rate the row's summary chose."""
    total = 0.0
    datasets = sorted({c["dataset"] for c in results["cells"].values()})
    for dataset in datasets:
        lr = compare_rows.summarise_row(results, row, datasets)["datasets"][dataset]["backbone_lr"]
        cell = next(c for c in results["cells"].values()
                    if c["row"] == row and c["dataset"] == dataset and c["seed"] == seed and c["backbone_lr"] == lr)
        total += 100.0 * cell[dataset_split]["roc_auc"]
    return total / len(datasets)


def test_difference_is_the_mean_of_per_seed_differences(results):
    comparison = compare_rows.compare(results, "assaycont2", "assaycont")
    diff = comparison["differences"]["validation"]
    assert diff["seeds"] == list(range(7))
    per_seed = [_average(results, "assaycont2", "validation", s) - _average(results, "assaycont", "validation", s)
                for s in diff["seeds"]]
    assert diff["mean"] == pytest.approx(sum(per_seed) / len(per_seed), abs=1e-9)
    assert diff["low"] < diff["mean"] < diff["high"]


def test_only_common_seeds_are_paired(results):
    # `graph` has seeds 0-4, `assaycont` 0-6: the pair uses 0-4 only.
    comparison = compare_rows.compare(results, "graph", "assaycont")
    assert comparison["differences"]["test"]["seeds"] == [0, 1, 2, 3, 4]


def test_markdown_names_both_rows_and_every_dataset(results):
    comparison = compare_rows.compare(results, "assaycont2", "assaycont")
    text = compare_rows.to_markdown(comparison, "assaycont2", "assaycont")
    assert "`assaycont2` − `assaycont`" in text
    for dataset in comparison["datasets"]:
        assert f"| {dataset} |" in text


def test_unknown_row_exits_naming_it(results):
    with pytest.raises(SystemExit, match="nonesuch"):
        compare_rows.compare(results, "nonesuch", "assaycont")
