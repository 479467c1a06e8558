"""Paired comparison of two rows of a ``benchmarks/moleculenet.py`` results file (for example a candidate against
the shipped checkpoint in a ``--cv_folds`` selection file), printed as Markdown.

    python benchmarks/compare_rows.py benchmarks/results/selection_cv5.json assaycont3 pretrained

For each of test at the best-validation epoch (in a ``--cv_folds`` file: the scored fold ``s + 1``), test at the
last epoch and validation at the best-validation epoch: both rows' multi-set averages, and ``row - control`` over
the seeds both have every dataset for, with its 95 % Student-t interval. Per-dataset means follow. The backbone
rate of each (row, dataset) is the one the benchmark chose on validation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.moleculenet import metric_for, paired_difference, summarise_row  # noqa: E402

SPLITS = {"test": "test, best-validation epoch", "last_test": "test, last epoch",
          "validation": "validation, best-validation epoch"}


def compare(results: dict[str, Any], row: str, control: str) -> dict[str, Any]:
    """Summaries of both rows and ``row - control`` per split (``paired_t_interval`` over the common seeds)."""
    missing = [name for name in (row, control) if name not in results["protocol"]["rows"]]
    if missing:
        raise SystemExit(f"rows {missing} are not in this results file; it has {list(results['protocol']['rows'])}")
    datasets = sorted({c["dataset"] for c in results["cells"].values()})
    summaries = {name: summarise_row(results, name, datasets) for name in (row, control)}
    paired = paired_difference(summaries, row, control, splits=tuple(SPLITS))
    differences = {split: d for split, d in paired.items() if len(d["seeds"]) >= 2}
    return {"datasets": datasets, "rows": summaries, "differences": differences}


def to_markdown(comparison: dict[str, Any], row: str, control: str) -> str:
    metric = metric_for(comparison["datasets"])
    p = metric.decimals
    lines = [f"| split | `{row}` | `{control}` | `{row}` − `{control}` [95 % CI] | seeds |", "|---|---:|---:|---|---|"]
    for split, name in SPLITS.items():
        mean = {r: comparison["rows"][r]["average"][split]["mean"] for r in (row, control)}
        d = comparison["differences"].get(split)
        diff = f"{d['mean']:+.{p}f} [{d['low']:+.{p}f}, {d['high']:+.{p}f}]" if d else "fewer than 2 common seeds"
        seeds = ", ".join(map(str, d["seeds"])) if d else ""
        cells = [f"{mean[r]:.{p}f}" if mean[r] is not None else "—" for r in (row, control)]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {diff} | {seeds} |")
    lines += ["", f"| dataset | `{row}` test | `{control}` test | `{row}` validation | `{control}` validation |",
              "|---|---:|---:|---:|---:|"]
    for dataset in comparison["datasets"]:
        entries = [comparison["rows"][r]["datasets"][dataset] for r in (row, control)]
        values = [e[s]["mean"] for s in ("test", "validation") for e in entries]
        lines.append(f"| {dataset} | " + " | ".join("—" if v is None else f"{v:.{p}f}" for v in values) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a results JSON of benchmarks/moleculenet.py")
    parser.add_argument("row", help="the row compared (e.g. the candidate)")
    parser.add_argument("control", help="the row it is compared against (e.g. the shipped checkpoint)")
    args = parser.parse_args(argv)
    if not args.results.is_file():
        raise SystemExit(f"{args.results}: no such results file")
    comparison = compare(json.loads(args.results.read_text()), args.row, args.control)
    print(to_markdown(comparison, args.row, args.control))
    return comparison


if __name__ == "__main__":
    main()
