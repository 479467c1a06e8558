#!/usr/bin/env python
"""MoleculeNet benchmark, protocol v2: pretrained vs the same architecture from scratch, paired over seeds.

    python benchmarks/moleculenet.py --pretrained_model runs/pretrain-small/final \
        --seeds 0 1 2 3 4 --backbone_lrs 1e-3 1e-4 --epochs 50 --workers 2

Protocol (the same for every row; nothing is chosen on test):

* scaffold split of BBBP, BACE, ClinTox, SIDER, Tox21 (identical to ``../shared/data/splits``); or, with
  ``--datasets esol freesolv lipophilicity``, the regression sets, scored by RMSE (lower is better) and averaged
  over sets as RMSE / the training labels' standard deviation (one kind of task per results file);
* with ``--cv_folds K``, a selection benchmark that never touches the reference test rows: the reference
  train + valid rows are cut into K scaffold folds, and seed ``s`` validates on fold ``s``, is scored on fold
  ``s + 1`` (mod K) and trains on the rest (:func:`mmsa_hf.data.cross_validation_split`);
* GIN only (``downstream_modalities=["graph"]``, GraphMVP protocol), dropout 0.5, batch 32;
* a fixed budget of ``--epochs`` epochs (no early stopping); Adam, head learning rate ``--head_lr``,
  backbone learning rate from the grid ``--backbone_lrs``; linear warmup over 5 % of the steps, then
  cosine decay; gradient clipping at norm 5.0 (:func:`mmsa_hf.training.finetune.finetune_cell`);
* the **headline metric is test ROC-AUC at the best-validation epoch**; test at the last epoch is
  reported beside it;
* the backbone rate is chosen per (row, dataset) by the mean over seeds of the validation ROC-AUC at
  the best-validation epoch;
* pretrained and scratch cells with the same seed share the split, the data order and the head
  initialisation, so their difference is paired: the table gives the mean difference of the 5-set
  average over seeds with a 95 % Student-t interval.

Rows: ``pretrained`` (``--pretrained_model``, a ``save_pretrained`` directory of any MMSA class),
``scratch`` (the same config, random init) and optional ``--extra_rows name=PATH`` (ablation
checkpoints; ``name=scratch`` is another random-init row). A row may change the fine-tuning recipe with
``--row_recipes name='{"frozen_backbone_epochs": 5}'`` (LP-FT); its paired difference is then taken against
the random-init row with the same recipe (none without one), so a recipe is never credited to pretraining. Every (row, dataset, seed, backbone rate) cell is appended to the results JSON as soon
as it finishes (atomic write); a re-run skips finished cells, so ``--rows``, ``--datasets`` and
``--seeds`` can fill the table over several sittings. Features are computed once per dataset (graph
view only when the processor supports views), pre-collated into tensors and stored under
``--work_dir``; ``--workers`` processes with one torch thread each train the cells in-process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DATASETS = ["bbbp", "bace", "clintox", "sider", "tox21"]
HEADLINE_ROWS = ["pretrained", "scratch"]
#: labels of the headline rows; an extra row's label is given once with --row_labels and kept in the results JSON
ROW_LABELS = {"pretrained": "(a) MMSA multi-view pretrained (`mmsa-small`)", "scratch": "(b) same architecture, from scratch"}
REFERENCE_LABELS = {"chemprop": "(d) chemprop 2.3.1 (reference)", "rf_ecfp4": "(d) RF on ECFP4 (reference)"}
README_BEGIN = "<!-- moleculenet-table:begin -->"
README_END = "<!-- moleculenet-table:end -->"
#: cell fields that depend on the machine, not on the protocol (left out when results are compared)
TIMING_KEYS = ("timing",)
#: CellSettings fields a row may set with --row_recipes (the rest of the protocol is shared by every row)
RECIPE_FIELDS = ("frozen_backbone_epochs",)


@dataclass(frozen=True)
class Metric:
    """How a run's cells are scored: one metric per results file, from the datasets' task type.

    ``value`` is a cell's score on one set as shown in the table; ``averaged`` is what the multi-set average is
    taken over (for RMSE, divided by the standard deviation of the set's training labels, all tasks pooled, so
    sets in different units weigh alike)."""

    key: str
    name: str
    scale: float
    higher_is_better: bool
    decimals: int

    def value(self, cell: dict[str, Any], split: str) -> float:
        return self.scale * cell[split][self.key]

    def averaged(self, cell: dict[str, Any], split: str) -> float:
        value = self.value(cell, split)
        return value if self.higher_is_better else value / cell["train_label_std"]

    def better(self, score: float) -> float:
        """A sort key: larger is better."""
        return score if self.higher_is_better else -score


METRICS = {"classification": Metric("roc_auc", "ROC-AUC × 100", 100.0, True, 2),
           "regression": Metric("rmse", "RMSE", 1.0, False, 3)}


def metric_for(datasets: Sequence[str]) -> Metric:
    """The metric of ``datasets``; mixing classification and regression sets exits naming them."""
    from mmsa_hf.data.moleculenet import get_task

    kinds = {d: get_task(d).task_type for d in datasets}
    if len(set(kinds.values())) != 1:
        raise SystemExit(f"--datasets {list(datasets)}: mixes task types {kinds}; run each kind in its own "
                         "results file")
    return METRICS[next(iter(kinds.values()))]


_FEATURES: dict[str, dict[str, Any]] = {}  # per worker process: dataset -> loaded features


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--pretrained_model", required=True, help="checkpoint directory (save_pretrained of an MMSA model)")
    add("--extra_rows", nargs="*", default=[], metavar="NAME=PATH", help="ablation checkpoints, one row each")
    add("--rows", nargs="+", default=None, help="rows to run (default: pretrained, scratch and the extra rows)")
    add("--row_recipes", nargs="*", default=[], metavar="NAME=JSON",
        help=f"fine-tuning settings of one row that differ from the protocol; keys: {', '.join(RECIPE_FIELDS)}")
    add("--row_labels", nargs="*", default=[], metavar="NAME=LABEL",
        help="table label of a row, stored in the results JSON (default: '(c) NAME')")
    add("--datasets", nargs="+", default=DATASETS)
    add("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    add("--cv_folds", type=int, default=0,
        help="K > 0: scaffold K-fold cross-validation inside the reference train + valid rows (the reference test "
             "rows are never used); seed s validates on fold s and is scored on fold s + 1; seeds in 0..K-1")
    add("--backbone_lrs", type=float, nargs="+", default=[1e-3, 3e-4, 1e-4], help="backbone learning-rate grid")
    add("--head_lr", type=float, default=1e-3)
    add("--epochs", type=int, default=100)
    add("--batch_size", type=int, default=32)
    add("--dropout", type=float, default=0.5)
    add("--warmup_ratio", type=float, default=0.05)
    add("--max_grad_norm", type=float, default=5.0)
    add("--max_molecules_per_split", type=int, default=None, help="smoke tests: first N molecules of each split")
    add("--workers", type=int, default=2, help="worker processes, one torch thread each (1 = in this process)")
    add("--grid_seeds", type=int, default=None,
        help="run the learning-rate grid on the first K seeds only; the other seeds then run at the rate those K "
             "seeds chose on validation (default: the grid on every seed)")
    add("--max_cells", type=int, default=None, help="stop after computing this many new cells")
    add("--work_dir", default=str(REPO / "runs" / "moleculenet_v2"))
    add("--results", default=str(REPO / "benchmarks" / "results" / "moleculenet_v2"),
        help="results path without suffix: .json (cells + summary) and .md (table)")
    add("--table_only", action="store_true", help="only rebuild the table from the results JSON")
    add("--no_readme", action="store_true", help="do not update the README table")
    args = parser.parse_args(argv)
    args.rows = args.rows or [*HEADLINE_ROWS, *[spec.split("=", 1)[0] for spec in args.extra_rows]]
    if args.cv_folds and (args.cv_folds < 3 or any(not 0 <= s < args.cv_folds for s in args.seeds)):
        parser.error(f"--cv_folds {args.cv_folds} needs at least 3 folds and --seeds in 0..{args.cv_folds - 1} "
                     f"(seed s validates on fold s); got --seeds {args.seeds}")
    return args


def row_sources(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Per row: the checkpoint its backbone is loaded from (None: random init), its config and its fine-tuning
    recipe (``--row_recipes``; empty: the protocol's)."""
    base = str(Path(args.pretrained_model).resolve())
    sources = {"pretrained": {"pretrained": base, "config": base}, "scratch": {"pretrained": None, "config": base}}
    for spec in args.extra_rows:
        name, _, path = spec.partition("=")
        if not path or name in sources:
            raise SystemExit(f"--extra_rows {spec!r}: expected NAME=PATH with a new name")
        if path == "scratch":
            sources[name] = dict(sources["scratch"])
        else:
            sources[name] = {"pretrained": str(Path(path).resolve()), "config": str(Path(path).resolve())}
    unknown = [r for r in args.rows if r not in sources]
    if unknown:
        raise SystemExit(f"--rows {unknown}: not among {list(sources)}")
    recipes = row_recipes(args)
    unknown = sorted(set(recipes) - set(sources))
    if unknown:
        raise SystemExit(f"--row_recipes {unknown}: not among the rows {list(sources)}")
    for name, source in sources.items():
        source["recipe"] = recipes.get(name, {})
    return sources


def row_recipes(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``--row_recipes`` as ``{row: {field: value}}``; an unknown row, field or bad JSON exits naming it."""
    recipes = {}
    for spec in args.row_recipes:
        name, _, text = spec.partition("=")
        try:
            recipe = json.loads(text)
        except json.JSONDecodeError as err:
            raise SystemExit(f"--row_recipes {spec!r}: the recipe is not JSON ({err})") from None
        if not isinstance(recipe, dict) or not recipe:
            raise SystemExit(f"--row_recipes {spec!r}: expected NAME={{\"field\": value}}")
        unknown = sorted(set(recipe) - set(RECIPE_FIELDS))
        if unknown:
            raise SystemExit(f"--row_recipes {spec!r}: {unknown} not among {list(RECIPE_FIELDS)}")
        recipes[name] = recipe
    return recipes


def protocol(args: argparse.Namespace) -> dict[str, Any]:
    """Everything a cell's result depends on besides (row, dataset, seed, backbone rate)."""
    sources = row_sources(args)
    recipes = {name: src["recipe"] for name, src in sources.items() if src["recipe"]}
    extra = {"row_recipes": recipes} if recipes else {}  # absent when no row has one (older results files)
    metric = metric_for(args.datasets)
    if args.cv_folds:  # a different file from the reference-split results: its cells must never mix with theirs
        extra["split"] = (f"scaffold {args.cv_folds}-fold cross-validation inside the reference train + valid rows "
                          "(reference test rows unused): seed s validates on fold s, is scored on fold s + 1")
    if not metric.higher_is_better:  # classification files keep their protocol (and so their cells) unchanged
        extra.update(headline_metric="test RMSE at the best-validation epoch",
                     average="mean over sets of RMSE / standard deviation of the set's training labels",
                     lr_selection="per (row, dataset): the backbone rate with the lowest mean over seeds of the "
                                  "validation RMSE at the best-validation epoch")
    return {
        "split": "scaffold", "downstream_modalities": ["graph"], "epochs": args.epochs,
        "batch_size": args.batch_size, "head_lr": args.head_lr, "dropout": args.dropout,
        "warmup_ratio": args.warmup_ratio, "schedule": "linear warmup, then cosine decay to 0",
        "max_grad_norm": args.max_grad_norm, "patience": None, "optimizer": "Adam, weight decay 0",
        "max_molecules_per_split": args.max_molecules_per_split,
        "rows": {name: src["pretrained"] for name, src in sources.items()},
        "headline_metric": "test ROC-AUC at the best-validation epoch",
        "lr_selection": "per (row, dataset): the backbone rate with the best mean over seeds of the validation "
                        "ROC-AUC at the best-validation epoch",
    } | extra


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temporary file in the same folder, fsync it, then ``os.replace`` it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_results(path: Path, expected_protocol: dict[str, Any]) -> dict[str, Any]:
    """The results so far (or an empty store); refuses to mix cells of another protocol."""
    if not path.exists():
        return {"protocol": expected_protocol, "cells": {}}
    results = json.loads(path.read_text())
    if results.get("protocol") != expected_protocol:
        raise SystemExit(f"{path} holds cells of another protocol; use another --results path.\n"
                         f"stored:   {results.get('protocol')}\nexpected: {expected_protocol}")
    return results


def cell_key(row: str, dataset: str, seed: int, lr: float) -> str:
    return f"{row}|{dataset}|seed={seed}|backbone_lr={lr:g}"


# ------------------------------------------------------------------------------------------------ features


def _base_processor(checkpoint: str):
    """The checkpoint's processor when it has one (its feature settings), else None."""
    if not (Path(checkpoint) / "processor_config.json").is_file():
        return None
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(checkpoint)


def features_path(work_dir: Path, dataset: str, fold: tuple[int, int] | None = None) -> Path:
    """The pre-collated features of ``dataset`` on the reference split, or on cross-validation round
    ``fold = (k, index)``."""
    name = dataset if fold is None else f"{dataset}_cv{fold[0]}_fold{fold[1]}"
    return work_dir / "features" / f"{name}.pt"


def cell_fold(cv_folds: int, seed: int) -> tuple[int, int] | None:
    """The cross-validation round a seed runs on (``None``: the reference split)."""
    return (cv_folds, seed) if cv_folds else None


def cross_validation_splits(dataset: str, k: int) -> list[dict[str, list[int]]]:
    """Row indices of the ``k`` rounds: scaffold folds of the reference train + valid rows (test rows unused).
    The scaffolds come from the set's cached scaffold table (no RDKit work here)."""
    from mmsa_hf.data import (cross_validation_split, load_moleculenet, moleculenet_scaffold_table,
                              scaffold_folds)

    reference = load_moleculenet(dataset, split="scaffold").split_indices
    scaffolds = moleculenet_scaffold_table(dataset)["scaffold"][:]  # row-indexed
    rows = reference["train"] + reference["valid"]
    folds = scaffold_folds(rows, [scaffolds[row] for row in rows], k)
    return [cross_validation_split(folds, fold, excluded=reference["excluded"]) for fold in range(k)]


def prepare_features(args: argparse.Namespace, sources: dict[str, dict[str, str | None]]) -> dict[str, float]:
    """Featurize each dataset once (graph view), pre-collate it into tensors and save it; returns seconds."""
    import torch

    from mmsa_hf.data import processor_fingerprint
    from mmsa_hf.training import finetune as ft

    processor = ft.processor_for_views(("graph",), base=_base_processor(sources["scratch"]["config"]))
    fingerprint = processor_fingerprint(processor)
    seconds = {}
    folds = sorted({cell_fold(args.cv_folds, seed) for seed in args.seeds}, key=str)
    for dataset in args.datasets:
        rounds = cross_validation_splits(dataset, args.cv_folds) if args.cv_folds else None  # once per dataset
        for fold in folds:
            path = features_path(Path(args.work_dir), dataset, fold)
            stored = torch.load(path, weights_only=False) if path.exists() else None
            if stored and stored["processor_fingerprint"] == fingerprint and \
                    stored["max_molecules_per_split"] == args.max_molecules_per_split:
                continue
            start = time.time()
            path.parent.mkdir(parents=True, exist_ok=True)
            split = "scaffold" if fold is None else rounds[fold[1]]
            torch.save(_featurize(args, dataset, processor, fingerprint, split), path.with_suffix(".tmp"))
            os.replace(path.with_suffix(".tmp"), path)
            seconds[path.stem] = time.time() - start
            print(f"featurized {path.stem} in {seconds[path.stem]:.0f} s", flush=True)
    return seconds


def _featurize(args, dataset: str, processor, fingerprint: str, split: str | dict) -> dict[str, Any]:
    from mmsa_hf.training import finetune as ft

    dsd, task = ft.load_task(dataset, split, num_proc=max(1, args.workers))
    if args.max_molecules_per_split:
        for name in list(dsd):
            dsd[name] = dsd[name].select(range(min(args.max_molecules_per_split, len(dsd[name]))))
    featurized, reports = ft.featurize_splits(dsd, processor, num_proc=max(1, args.workers))
    splits = ft.batch_sources(featurized, processor, task["label_columns"], ("graph",))
    return {"task": task, "train_labels": ft.train_label_matrix(dsd["train"], task["label_columns"]),
            "splits": {name: s.state_dict() for name, s in splits.items()}, "reports": reports,
            "processor_fingerprint": fingerprint, "max_molecules_per_split": args.max_molecules_per_split}


def _features(work_dir: str, dataset: str, fold: tuple[int, int] | None = None) -> dict[str, Any]:
    """Load a dataset's pre-collated splits (of one cross-validation round) once per process."""
    path = features_path(Path(work_dir), dataset, fold)
    if str(path) not in _FEATURES:
        import torch

        from mmsa_hf.training.graph_batches import GraphTensorSet

        stored = torch.load(path, weights_only=False)
        stored["splits"] = {k: GraphTensorSet.from_state_dict(v) for k, v in stored["splits"].items()}
        _FEATURES[str(path)] = stored
    return _FEATURES[str(path)]


# ------------------------------------------------------------------------------------------------ cells


#: digest of this file as the process imported it; a spawned worker re-imports the file from disk, so a job
#: carries its parent's digest and a worker that finds another version refuses it (see ``check_same_source``)
SOURCE_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def check_same_source(job: dict[str, Any]) -> None:
    """Raise if this process runs another version of this file than the one that planned ``job`` (it was edited
    on disk while a multi-worker run was going); the finished cells are already saved, so a rerun resumes."""
    if job.get("source_digest", SOURCE_DIGEST) != SOURCE_DIGEST:
        raise RuntimeError(
            f"{Path(__file__).name} changed on disk after this run started, so this worker would run other code "
            "than the process that planned its cell. The finished cells are saved in the results file: run the "
            "same command again to resume with the new code (and do not edit the benchmark while it runs).")


def run_cell(job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Fine-tune one (row, dataset, seed, backbone rate) cell with the package's loop; returns (key, cell)."""
    check_same_source(job)
    import numpy as np
    import torch

    from mmsa_hf.training import finetune as ft

    torch.set_num_threads(1)
    start, cpu_start = time.time(), time.process_time()
    features = _features(job["work_dir"], job["dataset"], cell_fold(job["cv_folds"], job["seed"]))
    task = features["task"]
    overrides = ft.task_overrides(task, features["train_labels"], job["dropout"], ["graph"])
    model = ft.build_model(job["pretrained"], job["config"], overrides, job["seed"])
    settings = ft.CellSettings(epochs=job["epochs"], batch_size=job["batch_size"], learning_rate=job["head_lr"],
                               backbone_learning_rate=job["lr"], warmup_ratio=job["warmup_ratio"],
                               max_grad_norm=job["max_grad_norm"], **job["recipe"])
    out = ft.finetune_cell(model, features["splits"], task["task_type"], settings, job["seed"])
    cell = _cell_record(job, out, time.time() - start, time.process_time() - cpu_start,
                        METRICS[task["task_type"]].key)
    if task["task_type"] == "regression":
        cell["train_label_std"] = float(np.nanstd(np.asarray(features["train_labels"], dtype=float)))
    return job["key"], cell


def _cell_record(job: dict[str, Any], out: dict[str, Any], wall_seconds: float, cpu_seconds: float,
                 metric: str) -> dict[str, Any]:
    metric_key = f"val_{metric}"
    return {
        "row": job["row"], "dataset": job["dataset"], "seed": job["seed"], "backbone_lr": job["lr"],
        "best_epoch": out["best_epoch"], "validation": out["validation"], "test": out["test"],
        "last_epoch": out["last_epoch"], "last_validation": out["last_validation"], "last_test": out["last_test"],
        "curves": [{"epoch": c["epoch"], "train_loss": c["train_loss"], metric_key: c.get(metric_key)}
                   for c in out["curves"]],
        "timing": {"wall_seconds": wall_seconds, "cpu_seconds": cpu_seconds, "train_seconds": out["train_seconds"],
                   "train_cpu_seconds": out["train_cpu_seconds"],
                   "train_molecules_per_s": out["mean_epoch_molecules_per_s"],
                   "train_molecules": sum(c["molecules"] for c in out["curves"])},
    }


def _job(args: argparse.Namespace, sources, row: str, dataset: str, seed: int, lr: float) -> dict[str, Any]:
    return {"key": cell_key(row, dataset, seed, lr), "row": row, "dataset": dataset, "seed": seed, "lr": lr,
            "work_dir": args.work_dir, "source_digest": SOURCE_DIGEST, **sources[row], **_job_settings(args)}


def _by_size(args: argparse.Namespace) -> list[str]:
    """Largest training sets first (better load balance over the workers)."""
    first = cell_fold(args.cv_folds, args.seeds[0])
    return sorted(args.datasets, key=lambda d: -len(_features(args.work_dir, d, first)["splits"]["train"]))


def grid_jobs(args: argparse.Namespace, results: dict[str, Any], sources) -> list[dict[str, Any]]:
    """Missing cells of the learning-rate grid: every rate for the first ``--grid_seeds`` seeds (all by default)."""
    seeds = args.seeds[: args.grid_seeds] if args.grid_seeds else args.seeds
    jobs = [_job(args, sources, row, dataset, seed, lr) for dataset in _by_size(args) for seed in seeds
            for lr in args.backbone_lrs for row in args.rows]
    return [j for j in jobs if j["key"] not in results["cells"]]


def followup_jobs(args: argparse.Namespace, results: dict[str, Any], sources) -> list[dict[str, Any]]:
    """With ``--grid_seeds K``: the other seeds, each only at the rate the K grid seeds chose on validation
    (for a (row, dataset) whose grid is complete)."""
    if not args.grid_seeds or args.grid_seeds >= len(args.seeds):
        return []
    grid_seeds, jobs = set(args.seeds[: args.grid_seeds]), []
    for dataset in _by_size(args):
        for row in args.rows:
            cells = [c for c in results["cells"].values() if c["row"] == row and c["dataset"] == dataset
                     and c["seed"] in grid_seeds and c["backbone_lr"] in args.backbone_lrs]
            if len(cells) < len(grid_seeds) * len(args.backbone_lrs):
                continue
            lr = select_backbone_lr(cells)[0]
            jobs += [_job(args, sources, row, dataset, seed, lr) for seed in args.seeds[args.grid_seeds:]]
    return [j for j in jobs if j["key"] not in results["cells"]]


def _job_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"epochs": args.epochs, "batch_size": args.batch_size, "head_lr": args.head_lr, "dropout": args.dropout,
            "warmup_ratio": args.warmup_ratio, "max_grad_norm": args.max_grad_norm, "cv_folds": args.cv_folds}


def _init_worker() -> None:
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()  # the per-cell "head newly initialised" load report


def execute(jobs: list[dict[str, Any]], results: dict[str, Any], path: Path, workers: int) -> list[str]:
    """Run the jobs (in this process or a spawn pool); each finished cell is written at once."""
    done: list[str] = []

    def record(key: str, cell: dict[str, Any]) -> None:
        results["cells"][key] = cell
        write_json_atomic(path, results)
        done.append(key)
        t, metric = cell["timing"], metric_for([cell["dataset"]]).key
        print(f"[{len(done)}/{len(jobs)}] {key}: test {metric} {cell['test'][metric]:.4f} (best-val epoch "
              f"{cell['best_epoch']}), last {cell['last_test'][metric]:.4f}; {t['wall_seconds']:.0f} s, "
              f"{t['train_molecules_per_s']:.0f} molecules/s", flush=True)

    if workers <= 1:
        _init_worker()
        for job in jobs:
            record(*run_cell(job))
        return done
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        for key, cell in pool.imap_unordered(run_cell, jobs, chunksize=1):
            record(key, cell)
    return done


def run_pending(args: argparse.Namespace, results: dict[str, Any], sources, path: Path) -> list[str]:
    """The missing grid cells, then (``--grid_seeds``) the follow-up seeds at the chosen rates; at most
    ``--max_cells`` new cells in all."""
    budget = args.max_cells if args.max_cells is not None else math.inf
    rate = throughput(results)["cell_molecules_per_cpu_s"] if results["cells"] else None
    grid = grid_jobs(args, results, sources)
    print(f"to run: {estimate(args, grid, rate)} in the grid ({len(results['cells'])} cells done)", flush=True)
    if args.grid_seeds and args.grid_seeds < len(args.seeds):
        done = {(c["row"], c["dataset"], c["seed"]) for c in results["cells"].values()}
        planned = [{"dataset": d, "epochs": args.epochs} for d in args.datasets for row in args.rows
                   for seed in args.seeds[args.grid_seeds:] if (row, d, seed) not in done]
        print(f"then, at the chosen rates: {estimate(args, planned, rate)}", flush=True)
    computed = execute(grid[: int(min(budget, len(grid)))], results, path, args.workers)
    followup = followup_jobs(args, results, sources)
    if followup and budget > len(computed):
        computed += execute(followup[: int(min(budget - len(computed), len(followup)))], results, path, args.workers)
    return computed


# ------------------------------------------------------------------------------------------------ summary


def _mean_std(values: list[float]) -> dict[str, Any]:
    import numpy as np

    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def select_backbone_lr(cells: list[dict[str, Any]]) -> tuple[float | None, dict[str, float]]:
    """The backbone rate with the best mean validation score (ROC-AUC, or RMSE for regression; at the
    best-validation epoch) over the seeds that every rate has; test metrics are never read. Returns (rate, mean
    validation per rate); a tie goes to the lower rate."""
    if not cells:
        return None, {}
    metric = metric_for([cells[0]["dataset"]])
    by_lr: dict[float, dict[int, float]] = {}
    for cell in cells:
        by_lr.setdefault(cell["backbone_lr"], {})[cell["seed"]] = cell["validation"][metric.key]
    common = set.intersection(*(set(seeds) for seeds in by_lr.values()))

    def mean_validation(values: dict[int, float]) -> float:
        used = [values[s] for s in (common or values)]
        return sum(used) / len(used)

    means = {lr: mean_validation(values) for lr, values in by_lr.items()}
    valid = {lr: m for lr, m in means.items() if not math.isnan(m)}
    best = max(valid, key=lambda lr: (metric.better(valid[lr]), -lr)) if valid else None
    return best, {f"{lr:g}": m for lr, m in sorted(means.items())}


def _chosen_cells(results: dict[str, Any], row: str, dataset: str) -> tuple[dict[int, dict], dict[str, Any]]:
    cells = [c for c in results["cells"].values() if c["row"] == row and c["dataset"] == dataset]
    lr, means = select_backbone_lr(cells)
    chosen = {c["seed"]: c for c in cells if c["backbone_lr"] == lr}
    return chosen, {"backbone_lr": lr, "validation_mean_by_lr": means}


def row_label(results: dict[str, Any], row: str) -> str:
    """The row's label: given with --row_labels (kept in the results JSON), a headline default, or "(c) row"."""
    return results.get("row_labels", {}).get(row) or ROW_LABELS.get(row, f"(c) {row}")


def store_row_labels(results: dict[str, Any], specs: Sequence[str]) -> None:
    """Merge ``NAME=LABEL`` specs into ``results["row_labels"]``."""
    for spec in specs:
        name, _, label = spec.partition("=")
        if not name or not label:
            raise SystemExit(f"--row_labels {spec!r}: expected NAME=LABEL")
        results.setdefault("row_labels", {})[name] = label


def summarise_row(results: dict[str, Any], row: str, datasets: list[str]) -> dict[str, Any]:
    """Per dataset at the chosen rate: test at the best-validation epoch and at the last epoch, and the best
    validation score (over seeds, in the metric's table units), and the multi-set average per seed (seeds that
    have every dataset; :meth:`Metric.averaged`). The validation average is what a checkpoint may be chosen on;
    the test averages are only reported."""
    per_dataset, per_seed = {}, {"test": {}, "last_test": {}, "validation": {}}
    score = metric_for(datasets)
    for dataset in datasets:
        chosen, info = _chosen_cells(results, row, dataset)
        entry = dict(info)
        for metric in per_seed:
            values = {s: score.value(c, metric) for s, c in sorted(chosen.items())}
            entry[metric] = {**_mean_std(list(values.values())), "per_seed": values}
            for seed, cell in sorted(chosen.items()):
                per_seed[metric].setdefault(seed, {})[dataset] = score.averaged(cell, metric)
        entry["best_epochs"] = [c["best_epoch"] for _, c in sorted(chosen.items())]
        per_dataset[dataset] = entry
    average = {}
    for metric, seeds in per_seed.items():
        full = {s: sum(v.values()) / len(datasets) for s, v in seeds.items() if len(v) == len(datasets)}
        average[metric] = {**_mean_std(list(full.values())), "per_seed": full}
    return {"label": row_label(results, row), "datasets": per_dataset, "average": average}


def paired_difference(rows: dict[str, Any], row: str, control: str = "scratch",
                      splits: Sequence[str] = ("test", "last_test")) -> dict[str, Any]:
    """``row - control`` of the multi-set average per split over the seeds both have, with a 95 % t interval."""
    from mmsa_hf.training.metrics import paired_t_interval

    out = {}
    for metric in splits:
        a, b = rows[row]["average"][metric]["per_seed"], rows[control]["average"][metric]["per_seed"]
        seeds = sorted(set(a) & set(b))
        out[metric] = {**paired_t_interval([a[s] for s in seeds], [b[s] for s in seeds]), "seeds": seeds}
    return out


def control_row(protocol_: dict[str, Any], row: str) -> str | None:
    """The random-init row a row is paired against: one with the same fine-tuning recipe, ``scratch`` first
    (the protocol's own recipe); None when no random-init row has that recipe."""
    recipes = protocol_.get("row_recipes", {})
    same = [name for name, path in protocol_["rows"].items()
            if path is None and recipes.get(name, {}) == recipes.get(row, {})]
    return min(same, key=lambda name: (name != "scratch", name), default=None)


def summarise(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rows_present = sorted({c["row"] for c in results["cells"].values()},
                          key=lambda r: (r not in HEADLINE_ROWS, HEADLINE_ROWS.index(r) if r in HEADLINE_ROWS else r))
    rows = {row: summarise_row(results, row, args.datasets) for row in rows_present}
    controls = {row: control_row(results["protocol"], row) for row in rows}
    differences = {row: {**paired_difference(rows, row, controls[row]), "control": controls[row]}
                   for row in rows if controls[row] not in (None, row) and controls[row] in rows}
    if not differences and len(rows) > 1:  # no random-init row (a selection run): each row against the first
        first = next(iter(rows))
        differences = {row: {**paired_difference(rows, row, first), "control": first, "control_is_random_init": False}
                       for row in rows if row != first}
    reference = {} if args.cv_folds else _reference(args.datasets)  # the references ran on the reference split
    return {"datasets": list(args.datasets), "rows": rows, "paired_difference_vs_scratch": differences,
            "reference": reference}


def _reference(datasets: list[str]) -> dict[str, Any]:
    shared = REPO.parent / "shared" / "data" / "baselines" / "results.json"
    path = shared if shared.exists() else REPO / "benchmarks" / "reference_baselines.json"
    methods = json.loads(path.read_text())["methods"]
    out = {}
    for method, per in methods.items():
        sets = {d: per[d] for d in datasets if d in per}
        out[method] = {"datasets": sets, "average": sum(v["mean"] for v in sets.values()) / len(sets)
                       if len(sets) == len(datasets) else None}
    return out


def throughput(results: dict[str, Any]) -> dict[str, Any]:
    """Training molecules per wall-second and per CPU-second of a worker (one thread), over all cells.

    The CPU-second rate does not depend on what else runs on the machine; the whole cell (model build, training,
    validation every epoch, test when validation improves) is ``cell_molecules_per_cpu_s``."""
    cells = list(results["cells"].values())
    total = {k: sum(c["timing"].get(k, 0.0) for c in cells)
             for k in ("train_molecules", "train_seconds", "train_cpu_seconds", "wall_seconds", "cpu_seconds")}
    per: dict[str, list[float]] = {}
    for c in cells:
        per.setdefault(c["dataset"], []).append(c["timing"]["train_molecules"] / max(c["timing"]["train_seconds"], 1e-9))
    return {"train_molecules_per_s": total["train_molecules"] / max(total["train_seconds"], 1e-9),
            "train_molecules_per_cpu_s": total["train_molecules"] / max(total["train_cpu_seconds"], 1e-9),
            "cell_molecules_per_cpu_s": total["train_molecules"] / max(total["cpu_seconds"], 1e-9),
            "per_dataset_molecules_per_s": {d: sum(v) / len(v) for d, v in per.items()},
            "cell_wall_seconds_total": total["wall_seconds"], "cell_cpu_seconds_total": total["cpu_seconds"],
            "cells": len(cells)}


def estimate(args: argparse.Namespace, jobs: list[dict[str, Any]], rate: float | None) -> str:
    """Training molecule-passes of ``jobs`` and, given a measured whole-cell rate, the wall time on the workers."""
    first = cell_fold(args.cv_folds, args.seeds[0])
    passes = sum(len(_features(args.work_dir, j["dataset"], first)["splits"]["train"]) * j["epochs"] for j in jobs)
    text = f"{len(jobs)} cells, {passes / 1e6:.2f} M training molecule-passes"
    if rate:
        text += f", about {passes / rate / max(1, args.workers) / 60:.0f} min on {args.workers} free core(s) " \
                f"at {rate:.0f} molecules per CPU-second"
    return text


# ------------------------------------------------------------------------------------------------ table


def _name(dataset: str) -> str:
    names = {"clintox": "ClinTox", "tox21": "Tox21", "freesolv": "FreeSolv", "lipophilicity": "Lipophilicity"}
    return names.get(dataset, dataset.upper())


def _ms(entry: dict[str, Any], decimals: int = 2) -> str:
    if entry.get("mean") is None:
        return "–"
    return f"{entry['mean']:.{decimals}f} ± {entry['std']:.{decimals}f}"


def _average_name(datasets: Sequence[str]) -> str:
    return "average" if metric_for(datasets).higher_is_better else "average RMSE / train-label std"


def _table(summary: dict[str, Any], metric: str) -> list[str]:
    datasets, decimals = summary["datasets"], metric_for(summary["datasets"]).decimals
    lines = ["| model | n | " + " | ".join(_name(d) for d in datasets) + f" | {_average_name(datasets)} |",
             "|---" * (len(datasets) + 3) + "|"]
    for row in summary["rows"].values():
        cells = [_ms(row["datasets"][d][metric], decimals) for d in datasets]
        n = sorted({row["datasets"][d][metric]["n"] for d in datasets})
        avg = row["average"][metric]
        avg_text = f"**{_ms(avg, decimals)}**" if avg["n"] else "–"
        lines.append(f"| {row['label']} | {'/'.join(map(str, n))} | " + " | ".join(cells) + f" | {avg_text} |")
    if metric == "test":
        for method, ref in summary["reference"].items():
            if not ref["datasets"]:
                continue
            cells = [f"{ref['datasets'][d]['mean']:.2f} ± {ref['datasets'][d]['std']:.2f}" if d in ref["datasets"]
                     else "–" for d in datasets]
            avg = f"**{ref['average']:.2f}**" if ref["average"] is not None else "–"
            n = ref["datasets"][datasets[0]].get("n_seeds", 3) if datasets[0] in ref["datasets"] else "–"
            lines.append(f"| {REFERENCE_LABELS.get(method, method)} | {n} | " + " | ".join(cells) + f" | {avg} |")
    return lines


def _difference_lines(summary: dict[str, Any]) -> list[str]:
    score = metric_for(summary["datasets"])
    lines = [] if score.higher_is_better else ["Lower is better: a negative difference favours the row.", ""]
    p = score.decimals
    differences = summary["paired_difference_vs_scratch"]
    if any(diff.get("control_is_random_init") is False for diff in differences.values()):
        lines += ["No random-init row in this file: each row is paired against the first row.", ""]
    for row, diff in differences.items():
        control = diff["control"]
        for metric, label in (("test", "best-validation epoch (headline)"), ("last_test", "last epoch")):
            d = diff[metric]
            if d["n"] < 2:
                lines.append(f"- {row} − {control}, {label}: {d['mean']:+.{p}f} over {d['n']} seed(s); no interval.")
                continue
            verdict = "excludes 0" if d["excludes_zero"] else "includes 0: no difference shown"
            lines.append(f"- {row} − {control}, {label}: **{d['mean']:+.{p}f}**, 95 % CI [{d['low']:+.{p}f}, "
                         f"{d['high']:+.{p}f}] over {d['n']} paired seeds ({verdict}).")
    return lines


def _validation_lines(summary: dict[str, Any]) -> list[str]:
    """The validation multi-set average per row: the score a checkpoint is chosen on (never the test table)."""
    datasets = summary["datasets"]
    entries = [f"{name} {_ms(row['average']['validation'], metric_for(datasets).decimals)}"
               for name, row in summary["rows"].items() if row["average"]["validation"]["n"]]
    if not entries:
        return []
    return [f"Validation {metric_for(datasets).name} at the best-validation epoch, {len(datasets)}-set "
            f"{_average_name(datasets)} (the only score a checkpoint is chosen on): " + "; ".join(entries) + ".", ""]


def render_markdown(summary: dict[str, Any], results: dict[str, Any]) -> str:
    p = results["protocol"]
    lrs = {row: {d: f"{v['backbone_lr']:g}" if v["backbone_lr"] else "–" for d, v in r["datasets"].items()}
           for row, r in summary["rows"].items()}
    speed, metric, n_sets = results.get("throughput", {}), metric_for(summary["datasets"]), len(summary["datasets"])
    text = [
        f"**Headline: test {metric.name} at the best-validation epoch**, mean ± std (population) over seeds; "
        f"scaffold split; {p['epochs']} epochs, no early stopping; backbone rate chosen per dataset on validation.",
        *_cross_validation_note(p), "", *_table(summary, "test"), "",
        f"Test {metric.name} at the last epoch (same cells):", "", *_table(summary, "last_test"), "",
        f"Paired difference of the {n_sets}-set {_average_name(summary['datasets'])} (same split, seed, data order "
        "and head initialisation; Student-t interval over seeds):", "", *_difference_lines(summary), "",
        *_validation_lines(summary),
        "Backbone learning rate chosen on validation: " + "; ".join(
            f"{row}: " + ", ".join(f"{d} {lr}" for d, lr in per.items()) for row, per in lrs.items()) + ".", "",
    ]
    if speed:
        text += [f"Fine-tuning throughput per worker (1 torch thread, pre-collated graph tensors): "
                 f"{speed['train_molecules_per_cpu_s']:.0f} training molecules per CPU-second "
                 f"({speed['cell_molecules_per_cpu_s']:.0f} counting validation and test), "
                 f"{speed['train_molecules_per_s']:.0f} per wall-second on the shared machine; {speed['cells']} cells, "
                 f"{speed['cell_wall_seconds_total'] / 60:.1f} worker-minutes.", ""]
    references = any(ref["datasets"] for ref in summary["reference"].values())
    text.append(f"Generated by `python benchmarks/moleculenet.py` from `{results['results_file']}`"
                + ("; chemprop and RF rows: `../shared/data/baselines` (3 seeds, same split). Earlier protocol: "
                   "`benchmarks/results/moleculenet_v1.md`." if references else "."))
    return "\n".join(text) + "\n"


def _cross_validation_note(protocol_: dict[str, Any]) -> list[str]:
    if "cross-validation" not in protocol_["split"]:
        return []
    return ["", f"**Split: {protocol_['split']}.** Here *test* is that next fold, never the reference test set; "
            "a seed is a fold."]


def update_readme(table: str) -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    if README_BEGIN in text and README_END in text:
        before, rest = text.split(README_BEGIN, 1)
        _, after = rest.split(README_END, 1)
        readme.write_text(before + README_BEGIN + "\n" + table + README_END + after)


# ------------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the missing cells, then write the results JSON, the Markdown table and the README table."""
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_XET="1")
    args = parse_args(argv)
    sources = row_sources(args)
    out = Path(args.results)
    path = out.with_suffix(".json")
    results = load_results(path, protocol(args))
    store_row_labels(results, args.row_labels)
    computed: list[str] = []
    if not args.table_only:
        start = time.time()
        featurize_seconds = prepare_features(args, sources)
        computed = run_pending(args, results, sources, path)
        timings = results.setdefault("timings", {})
        timings.setdefault("featurize_seconds", {}).update(featurize_seconds)
        timings.setdefault("sittings", []).append({"cells": len(computed), "workers": args.workers,
                                                   "wall_seconds": time.time() - start})
    results["throughput"] = throughput(results) if results["cells"] else {}
    resolved = path.resolve()
    results["results_file"] = str(resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else resolved)
    results["summary"] = summarise(results, args)
    write_json_atomic(path, results)
    table = render_markdown(results["summary"], results)
    out.with_suffix(".md").write_text(table)
    if not args.no_readme and metric_for(args.datasets).higher_is_better and not args.cv_folds:  # the headline table
        update_readme(table)
    print(table)
    return {"computed": computed, "results": results}


if __name__ == "__main__":
    main()
