"""benchmarks/moleculenet.py on a tiny checkpoint and 24 molecules a split: resume, pool, selection, table."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import moleculenet as bench  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random pretraining checkpoint, a datasets cache and a features folder shared by the runs."""
    import datasets

    from mmsa_hf.modeling import MMSAConfig, MMSAForPreTraining

    root = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    MMSAForPreTraining(MMSAConfig.from_preset("tiny")).save_pretrained(root / "ckpt")
    old = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = str(root / "datasets_cache")
    yield root
    datasets.config.HF_DATASETS_CACHE = old


def _argv(root: Path, results: str, *extra: str) -> list[str]:
    return ["--pretrained_model", str(root / "ckpt"), "--datasets", "bbbp", "--seeds", "0", "1",
            "--backbone_lrs", "1e-3", "1e-4", "--epochs", "2", "--max_molecules_per_split", "24",
            "--work_dir", str(root / "work"), "--results", str(root / results), "--no_readme", *extra]


def _without_timing(results: dict) -> dict:
    cells = {k: {f: v for f, v in c.items() if f not in bench.TIMING_KEYS} for k, c in results["cells"].items()}
    return {**{k: v for k, v in results.items() if k not in ("timings", "throughput", "results_file")},
            "cells": cells}


def test_killed_run_resumes_only_the_missing_cells_and_matches_an_uninterrupted_pooled_run(setup):
    whole = bench.main(_argv(setup, "whole", "--workers", "2"))
    assert len(whole["computed"]) == 8  # 2 rows x 1 set x 2 seeds x 2 rates, in 2 spawned workers
    first = bench.main(_argv(setup, "resumed", "--workers", "1", "--max_cells", "3"))
    on_disk = json.loads((setup / "resumed.json").read_text())
    assert sorted(on_disk["cells"]) == sorted(first["computed"]) and len(first["computed"]) == 3
    second = bench.main(_argv(setup, "resumed", "--workers", "1"))
    assert set(second["computed"]) == set(whole["computed"]) - set(first["computed"])
    resumed = json.loads((setup / "resumed.json").read_text())
    reference = json.loads((setup / "whole.json").read_text())
    assert _without_timing(resumed) == _without_timing(reference)
    assert bench.main(_argv(setup, "resumed", "--workers", "1"))["computed"] == []


def test_cells_hold_both_test_metrics_and_pretrained_and_scratch_are_paired(setup):
    results = json.loads((setup / "whole.json").read_text())
    cell = results["cells"][bench.cell_key("pretrained", "bbbp", 0, 1e-3)]
    assert cell["last_epoch"] == 1 and cell["best_epoch"] in (0, 1) and len(cell["curves"]) == 2
    assert 0 <= cell["test"]["roc_auc"] <= 1 and 0 <= cell["last_test"]["roc_auc"] <= 1
    diff = results["summary"]["paired_difference_vs_scratch"]["pretrained"]["test"]
    rows = results["summary"]["rows"]
    a, b = rows["pretrained"]["average"]["test"]["per_seed"], rows["scratch"]["average"]["test"]["per_seed"]
    assert diff["n"] == 2 and diff["mean"] == pytest.approx(sum(a[s] - b[s] for s in a) / 2)
    table = (setup / "whole.md").read_text()
    assert "best-validation epoch" in table.splitlines()[0] and "95 % CI" in table and "chemprop" in table
    validation = rows["pretrained"]["average"]["validation"]
    cells = [c for c in results["cells"].values() if c["row"] == "pretrained" and c["seed"] == 0
             and c["backbone_lr"] == rows["pretrained"]["datasets"]["bbbp"]["backbone_lr"]]
    assert validation["per_seed"]["0"] == pytest.approx(100 * cells[0]["validation"]["roc_auc"])
    assert f"pretrained {validation['mean']:.2f}" in table


def test_a_protocol_change_is_refused_instead_of_mixing_cells(setup):
    with pytest.raises(SystemExit, match="another protocol"):
        bench.main(_argv(setup, "whole", "--workers", "1", "--head_lr", "3e-3"))


def _cell(lr: float, seed: int, val: float, test: float, row: str = "pretrained") -> dict:
    return {"row": row, "dataset": "bace", "seed": seed, "backbone_lr": lr, "best_epoch": 3,
            "validation": {"roc_auc": val}, "test": {"roc_auc": test}, "last_test": {"roc_auc": test - 0.01}}


def test_backbone_rate_is_chosen_on_validation_even_when_test_disagrees():
    cells = [_cell(1e-3, 0, 0.80, 0.90), _cell(1e-3, 1, 0.82, 0.91),   # better test, worse validation
             _cell(1e-4, 0, 0.85, 0.70), _cell(1e-4, 1, 0.86, 0.72)]   # better validation
    lr, means = bench.select_backbone_lr(cells)
    assert lr == 1e-4 and means == {"0.0001": pytest.approx(0.855), "0.001": pytest.approx(0.81)}
    results = {"cells": {str(i): c for i, c in enumerate(cells)}}
    row = bench.summarise_row(results, "pretrained", ["bace"])
    assert row["datasets"]["bace"]["backbone_lr"] == 1e-4
    assert row["datasets"]["bace"]["test"]["mean"] == pytest.approx(71.0)
    assert row["average"]["validation"]["per_seed"] == {0: pytest.approx(85.0), 1: pytest.approx(86.0)}


def test_selection_compares_rates_on_the_seeds_they_share_and_ignores_nan():
    cells = [_cell(1e-3, 0, 0.80, 0.9), _cell(1e-3, 1, 0.70, 0.9), _cell(1e-4, 0, 0.79, 0.7),
             _cell(3e-4, 0, math.nan, 0.99), _cell(3e-4, 1, math.nan, 0.99)]
    lr, means = bench.select_backbone_lr(cells)  # seed 0 only: 0.80 vs 0.79
    assert lr == 1e-3 and means["0.001"] == pytest.approx(0.80)


def test_grid_seeds_run_the_grid_on_k_seeds_and_the_rest_at_the_rate_they_chose(setup):
    run = bench.main(_argv(setup, "grid1", "--workers", "1", "--grid_seeds", "1", "--seeds", "0", "1", "2"))
    results = run["results"]
    cells = list(results["cells"].values())
    assert len(run["computed"]) == len(cells) == 2 * 2 + 2 * 2  # grid: 2 rows x 2 rates; then 2 rows x 2 seeds
    for row in ("pretrained", "scratch"):
        grid = [c for c in cells if c["row"] == row and c["seed"] == 0]
        chosen, _ = bench.select_backbone_lr(grid)
        later = [c for c in cells if c["row"] == row and c["seed"] > 0]
        assert {c["backbone_lr"] for c in later} == {chosen}
        entry = results["summary"]["rows"][row]["datasets"]["bbbp"]
        assert entry["backbone_lr"] == chosen and entry["test"]["n"] == 3


def test_a_row_recipe_is_part_of_the_protocol_and_is_paired_against_random_init_with_the_same_recipe(setup):
    lpft = '{"frozen_backbone_epochs": 1}'
    run = bench.main(_argv(setup, "recipes", "--workers", "1", "--backbone_lrs", "1e-3",
                           "--extra_rows", f"lpft={setup / 'ckpt'}", "scratch_lpft=scratch",
                           "--row_recipes", f"lpft={lpft}", f"scratch_lpft={lpft}"))
    results = run["results"]
    assert results["protocol"]["row_recipes"] == {"lpft": {"frozen_backbone_epochs": 1},
                                                  "scratch_lpft": {"frozen_backbone_epochs": 1}}
    assert results["protocol"]["rows"]["scratch_lpft"] is None  # random init, like scratch
    diffs = results["summary"]["paired_difference_vs_scratch"]
    assert diffs["lpft"]["control"] == "scratch_lpft" and diffs["pretrained"]["control"] == "scratch"
    assert "scratch_lpft" not in diffs and "scratch" not in diffs
    cells = results["cells"]
    plain, frozen = (cells[bench.cell_key(row, "bbbp", 0, 1e-3)] for row in ("pretrained", "lpft"))
    assert plain["curves"][0]["train_loss"] != frozen["curves"][0]["train_loss"]  # the recipe was applied
    assert "lpft − scratch_lpft" in (setup / "recipes.md").read_text()


@pytest.mark.parametrize("spec, message", [('lpft={"patience": 3}', "not among"), ("lpft={oops", "not JSON"),
                                           ('nosuchrow={"frozen_backbone_epochs": 1}', "not among the rows")])
def test_a_bad_row_recipe_exits_naming_it(setup, spec, message):
    with pytest.raises(SystemExit, match=message):
        bench.main(_argv(setup, "bad_recipe", "--workers", "1", "--extra_rows", f"lpft={setup / 'ckpt'}",
                         "--row_recipes", spec))


def _regression_cell(lr: float, seed: int, val: float, test: float, dataset: str = "esol", std: float = 2.0) -> dict:
    return {"row": "pretrained", "dataset": dataset, "seed": seed, "backbone_lr": lr, "best_epoch": 3,
            "validation": {"rmse": val}, "test": {"rmse": test}, "last_test": {"rmse": test + 0.1},
            "train_label_std": std}


def test_a_regression_rate_is_chosen_by_the_lowest_validation_rmse_and_sets_average_in_label_std_units():
    cells = [_regression_cell(1e-3, 0, 1.2, 0.5), _regression_cell(1e-4, 0, 0.9, 0.8),  # lower validation RMSE
             _regression_cell(1e-3, 0, 3.0, 2.0, "freesolv", 4.0), _regression_cell(1e-4, 0, 2.0, 3.0, "freesolv", 4.0)]
    assert bench.select_backbone_lr(cells[:2])[0] == 1e-4
    row = bench.summarise_row({"cells": {str(i): c for i, c in enumerate(cells)}}, "pretrained", ["esol", "freesolv"])
    assert row["datasets"]["esol"]["test"]["mean"] == pytest.approx(0.8)  # RMSE in the set's own units
    assert row["average"]["test"]["per_seed"] == {0: pytest.approx((0.8 / 2.0 + 3.0 / 4.0) / 2)}
    assert row["average"]["validation"]["per_seed"] == {0: pytest.approx((0.9 / 2.0 + 2.0 / 4.0) / 2)}


def test_regression_sets_run_end_to_end_scored_by_rmse(setup):
    run = bench.main(_argv(setup, "regression", "--workers", "1", "--seeds", "0", "--datasets", "esol", "freesolv"))
    results = run["results"]
    assert len(run["computed"]) == 2 * 2 * 2  # 2 rows x 2 sets x 2 rates
    assert "RMSE" in results["protocol"]["headline_metric"]
    cell = results["cells"][bench.cell_key("pretrained", "esol", 0, 1e-3)]
    assert cell["test"]["rmse"] > 0 and cell["train_label_std"] > 0 and "val_rmse" in cell["curves"][0]
    table = (setup / "regression.md").read_text()
    assert "test RMSE" in table.splitlines()[0] and "Lower is better" in table and "(d) chemprop" not in table
    assert "| ESOL | FreeSolv | average RMSE / train-label std |" in table
    average = results["summary"]["rows"]["pretrained"]["average"]["test"]
    assert f"**{average['mean']:.3f} ± {average['std']:.3f}**" in table  # RMSE to 3 decimals
    with pytest.raises(SystemExit, match="mixes task types"):
        bench.main(_argv(setup, "mixed", "--workers", "1", "--datasets", "bbbp", "esol"))


def test_cross_validation_rounds_use_only_the_reference_train_and_valid_rows(setup):
    from mmsa_hf.data import load_moleculenet

    reference = load_moleculenet("bbbp", split="scaffold").split_indices
    rounds = bench.cross_validation_splits("bbbp", 3)
    allowed = set(reference["train"]) | set(reference["valid"])
    assert sorted(r for split in rounds for r in split["valid"]) == sorted(allowed)  # each row validates once
    for split in rounds:
        assert not set(split["train"]) & set(split["valid"]) and not set(split["valid"]) & set(split["test"])
        assert set(split["train"]) | set(split["valid"]) | set(split["test"]) == allowed  # no reference test row
    assert rounds[0]["test"] == rounds[1]["valid"]  # seed s is scored on fold s + 1


def test_a_cross_validation_run_is_its_own_protocol_with_a_feature_file_per_fold(setup):
    run = bench.main(_argv(setup, "cv", "--workers", "1", "--backbone_lrs", "1e-3", "--cv_folds", "3",
                           "--seeds", "0", "1", "2"))
    results = run["results"]
    assert len(run["computed"]) == 2 * 3 and "cross-validation" in results["protocol"]["split"]
    assert all((setup / "work" / "features" / f"bbbp_cv3_fold{f}.pt").is_file() for f in range(3))
    assert results["summary"]["reference"] == {} and "never the reference test set" in (setup / "cv.md").read_text()
    with pytest.raises(SystemExit):  # seed 3 has no fold 3
        bench.main(_argv(setup, "cv", "--workers", "1", "--cv_folds", "3", "--seeds", "0", "3"))


def test_a_worker_refuses_a_job_planned_by_another_version_of_the_benchmark():
    # A spawned worker re-imports benchmarks/moleculenet.py from disk; if the file was edited while the run went,
    # the job's digest (the planning process's file) differs and the worker stops with a message, not a KeyError.
    job = {"key": "pretrained|bbbp|seed=0|backbone_lr=0.001", "source_digest": "0" * 64}
    with pytest.raises(RuntimeError, match="changed on disk after this run started"):
        bench.run_cell(job)
    assert bench.SOURCE_DIGEST != "0" * 64
    assert len(bench.SOURCE_DIGEST) == 64


def test_a_file_without_a_random_init_row_pairs_every_row_against_the_first():
    # The committed 5-fold selection run, less its scratch row: two pretrained checkpoints, as the decision ran.
    results = json.loads((REPO / "benchmarks" / "results" / "selection_cv5.json").read_text())
    results["cells"] = {k: c for k, c in results["cells"].items() if c["row"] != "scratch"}
    assert {c["row"] for c in results["cells"].values()} == {"pretrained", "assaycont3"}
    args = bench.parse_args(["--pretrained_model", "unused", "--cv_folds", "5", "--results", "unused"])
    summary = bench.summarise(results, args)
    diff = summary["paired_difference_vs_scratch"]["assaycont3"]
    assert diff["control"] == "pretrained" and diff["control_is_random_init"] is False
    a = summary["rows"]["assaycont3"]["average"]["test"]["per_seed"]
    b = summary["rows"]["pretrained"]["average"]["test"]["per_seed"]
    assert diff["test"]["n"] == 5
    assert math.isclose(diff["test"]["mean"], sum(a[s] - b[s] for s in a) / 5, rel_tol=1e-9)
    lines = bench._difference_lines(summary)
    assert "each row is paired against the first row" in lines[0]
    assert any(line.startswith("- assaycont3 − pretrained, best-validation epoch") for line in lines)
    full = json.loads((REPO / "benchmarks" / "results" / "selection_cv5.json").read_text())
    with_scratch = bench.summarise(full, args)["paired_difference_vs_scratch"]
    assert with_scratch["assaycont3"]["control"] == "scratch" and "control_is_random_init" not in with_scratch["assaycont3"]
