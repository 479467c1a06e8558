"""Fine-tuning and multi-seed evaluation of MMSA on MoleculeNet sets or CSVs, driven by Accelerate.

For each model seed: train with early stopping on the validation metric (ROC-AUC, or RMSE for
regression), keep the best-validation epoch, report the test metric at that epoch, and save that
checkpoint with ``save_pretrained`` beside the processor (the label normalisation lives in the
config). The data split is chosen by ``--split`` / ``--data_seed``, independently of the model
seeds, and saved with the results.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .common import (
    PRESET_IMAGE_SIZE,
    JsonlLog,
    build_processor,
    Timer,
    environment_info,
    logger,
    plot_curves,
    resolve_model_config,
    write_json,
)
from .metrics import classification_metrics, regression_metrics


@dataclass
class FinetuneArguments:
    """Every setting of a fine-tuning run (saved in ``results.json``)."""

    model: str | None = None
    from_scratch: bool = False
    config: str = "small"
    dataset: str = "bbbp"
    smiles_column: str | None = None
    label_columns: list[str] | None = None
    task_type: str | None = None
    split: str = "scaffold"
    data_seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    max_train_molecules: int | None = None
    epochs: int = 30
    patience: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    backbone_learning_rate: float | None = None
    weight_decay: float = 0.0
    dropout: float | None = None
    downstream_modalities: list[str] | None = None
    image_size: int | None = None
    mixed_precision: str = "no"
    num_proc: int = 1
    output_dir: str = "runs/finetune"
    save_checkpoints: bool = True
    cpu: bool = False
    push_to_hub: bool = False
    hub_model_id: str | None = None


def build_parser() -> argparse.ArgumentParser:
    """argparse parser whose options mirror :class:`FinetuneArguments`."""
    parser = argparse.ArgumentParser(
        prog="finetune",
        description="Fine-tune MMSA on a MoleculeNet set or a CSV; multi-seed, early stopping on validation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  accelerate launch --cpu --num_processes 1 scripts/finetune.py --model runs/pretrain-small/final --dataset bbbp\n"
            "  mmsa finetune --from_scratch --config small --dataset tox21 --seeds 0 1 2\n"
            "  mmsa finetune --model my-org/mmsa-small --dataset data.csv --smiles_column smiles \\\n"
            "      --label_columns y --task_type regression --split random\n"
        ),
    )
    d = FinetuneArguments()
    add = parser.add_argument
    add("--model", default=None, help="pretrained checkpoint: a local directory or a Hub id")
    add("--from_scratch", action="store_true", help="random initialisation from --config instead of --model")
    add("--config", default=d.config, help="preset for --from_scratch (tiny/small/base) or config .json")
    add("--dataset", default=d.dataset, help="MoleculeNet name or a CSV/Parquet path / Hub dataset id")
    add("--smiles_column", default=None)
    add("--label_columns", nargs="+", default=None)
    add("--task_type", choices=["classification", "regression"], default=None)
    add("--split", choices=["scaffold", "balanced_scaffold", "random"], default=d.split)
    add("--data_seed", type=int, default=d.data_seed, help="seed of the data split (balanced_scaffold/random)")
    add("--seeds", type=int, nargs="+", default=d.seeds, help="model seeds, one run each")
    add("--max_train_molecules", type=int, default=None, help="use only the first N training molecules")
    add("--epochs", type=int, default=d.epochs)
    add("--patience", type=int, default=d.patience, help="early stopping patience in epochs")
    add("--batch_size", type=int, default=d.batch_size)
    add("--learning_rate", type=float, default=d.learning_rate)
    add("--backbone_learning_rate", type=float, default=None, help="defaults to --learning_rate")
    add("--weight_decay", type=float, default=d.weight_decay)
    add("--dropout", type=float, default=None,
        help="fine-tuning dropout of the GIN layers and the head (Hu et al. use 0.5); default: the checkpoint's")
    add("--downstream_modalities", nargs="+", default=None, choices=["graph", "image", "geometry"])
    add("--image_size", type=int, default=None)
    add("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    add("--num_proc", type=int, default=1)
    add("--output_dir", default=d.output_dir)
    add("--no_save_checkpoints", dest="save_checkpoints", action="store_false")
    add("--cpu", action="store_true")
    add("--push_to_hub", action="store_true")
    add("--hub_model_id", default=None)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> FinetuneArguments:
    """Parse command-line options into :class:`FinetuneArguments`."""
    args = FinetuneArguments(**vars(build_parser().parse_args(argv)))
    if not args.model and not args.from_scratch:
        raise SystemExit("give --model DIR_OR_HUB_ID (pretrained) or --from_scratch")
    if args.model and args.from_scratch:
        raise SystemExit("--model and --from_scratch exclude each other")
    if args.push_to_hub and not args.hub_model_id:
        raise SystemExit("--push_to_hub needs --hub_model_id")
    return args


def _load_task(args: FinetuneArguments):
    """(DatasetDict, task metadata dict) for a MoleculeNet name or a user table."""
    from ..data import MOLECULENET_TASKS, get_task, load_moleculenet, make_task

    if args.dataset.lower() in MOLECULENET_TASKS or args.dataset.lower() in ("lipo", "delaney"):
        task = get_task(args.dataset)
        dsd = load_moleculenet(task.name, split=args.split, seed=args.data_seed, num_proc=args.num_proc)
    else:
        if not args.label_columns or not args.task_type:
            raise SystemExit(f"--dataset {args.dataset!r} is not a MoleculeNet name: give --label_columns and --task_type")
        task = make_task(args.dataset, args.label_columns, args.task_type, smiles_column=args.smiles_column or "smiles")
        dsd = load_moleculenet(task, data_files=args.dataset, split=args.split, seed=args.data_seed)
    return dsd, {"name": task.name, "task_type": task.task_type, "label_columns": list(task.label_columns)}


def _predict(model, loader, accelerator) -> tuple[np.ndarray, np.ndarray]:
    """Scores (classification) or de-normalised predictions (regression), and labels."""
    model.eval()
    scores, labels = [], []
    with torch.no_grad():
        for batch in loader:
            batch_labels = batch.pop("labels")
            batch.pop("row_index", None)
            outputs = model(**batch)
            preds = accelerator.unwrap_model(model).predict_from_logits(outputs.logits)
            preds, batch_labels = accelerator.gather_for_metrics((preds.float(), batch_labels))
            scores.append(preds.cpu().numpy())
            labels.append(batch_labels.cpu().numpy())
    model.train()
    return np.concatenate(scores), np.concatenate(labels)


def _metric(task_type: str, labels: np.ndarray, scores: np.ndarray) -> tuple[float, dict[str, Any]]:
    """(selection value where higher is better, full metric dict)."""
    if task_type == "classification":
        result = classification_metrics(labels, scores)
        return result["roc_auc"], result
    result = regression_metrics(labels, scores)
    return -result["rmse"], result


def run_finetuning(args: FinetuneArguments) -> dict[str, Any]:
    """Fine-tune over ``args.seeds``; write results JSON/Markdown/PNGs; return the results dict."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import AutoProcessor

    from ..data import MMSACollator, featurize_dataset, featurize_report
    from ..modeling import MMSAForMolecularPropertyPrediction

    timer = Timer()
    out = Path(args.output_dir)
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)
    is_main = accelerator.is_main_process
    dsd, task = _load_task(args)
    label_columns, task_type = task["label_columns"], task["task_type"]

    if args.model:
        processor = AutoProcessor.from_pretrained(args.model)
    else:
        preset = args.config if args.config in PRESET_IMAGE_SIZE else "small"
        processor = build_processor(image_size=args.image_size or PRESET_IMAGE_SIZE[preset])
    if args.max_train_molecules:
        dsd["train"] = dsd["train"].select(range(min(args.max_train_molecules, len(dsd["train"]))))

    with accelerator.main_process_first():
        featurized, reports = {}, {}
        for split_name, split in dsd.items():
            featurized[split_name] = featurize_dataset(
                split, processor, num_proc=args.num_proc, on_error="skip", accelerator=accelerator
            )
            reports[split_name] = featurize_report(featurized[split_name])
    collator = MMSACollator(processor, label_columns=label_columns)

    train_labels = np.asarray(featurized["train"].with_format("numpy")[label_columns[0]]) if len(label_columns) == 1 else \
        np.stack([np.asarray(featurized["train"].with_format("numpy")[c], dtype=np.float64) for c in label_columns], 1)
    train_labels = train_labels.reshape(len(featurized["train"]), -1).astype(np.float64)
    overrides: dict[str, Any] = {
        "num_labels": len(label_columns),
        "id2label": dict(enumerate(label_columns)),  # task names, used by `mmsa predict` for its columns
        "problem_type": ("binary" if len(label_columns) == 1 else "multi_label") if task_type == "classification" else "regression",
    }
    if task_type == "regression":
        overrides["label_mean"] = np.nanmean(train_labels, axis=0).tolist()
        overrides["label_std"] = np.maximum(np.nanstd(train_labels, axis=0), 1e-6).tolist()
    if args.dropout is not None:
        overrides["graph_dropout"] = args.dropout
        overrides["classifier_dropout"] = args.dropout
    if args.downstream_modalities:
        overrides["downstream_modalities"] = list(args.downstream_modalities)

    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        set_seed(seed)
        if args.model:
            model = MMSAForMolecularPropertyPrediction.from_pretrained(args.model, **overrides)
        else:
            model = MMSAForMolecularPropertyPrediction(resolve_model_config(args.config, overrides))
        backbone = [p for n, p in model.named_parameters() if n.startswith(model.base_model_prefix + ".")]
        head = [p for n, p in model.named_parameters() if not n.startswith(model.base_model_prefix + ".")]
        optimizer = torch.optim.Adam(
            [{"params": backbone, "lr": args.backbone_learning_rate or args.learning_rate},
             {"params": head, "lr": args.learning_rate}],
            weight_decay=args.weight_decay,
        )
        generator = torch.Generator().manual_seed(seed)
        train_loader = torch.utils.data.DataLoader(featurized["train"], batch_size=args.batch_size, shuffle=True,
                                                   collate_fn=collator, generator=generator)
        eval_loaders = {
            name: torch.utils.data.DataLoader(featurized[name], batch_size=max(args.batch_size, 64), collate_fn=collator)
            for name in ("validation", "test")
        }
        model, optimizer, train_loader, val_loader, test_loader = accelerator.prepare(
            model, optimizer, train_loader, eval_loaders["validation"], eval_loaders["test"]
        )
        run_dir = out / f"seed_{seed}"
        log = JsonlLog(run_dir / "curves.jsonl", enabled=is_main)
        if is_main and log.path.exists():
            log.path.unlink()
        best: dict[str, Any] = {"value": -math.inf}
        best_state = None
        stale = 0
        progress = tqdm(range(args.epochs), desc=f"{task['name']} seed {seed}", disable=not is_main, unit="epoch")
        for epoch in progress:
            epoch_timer, n_mols, losses = Timer(), 0, []
            model.train()
            for batch in train_loader:
                batch.pop("row_index", None)
                outputs = model(**batch)
                accelerator.backward(outputs.loss)
                optimizer.step()
                optimizer.zero_grad()
                losses.append(float(outputs.loss.detach()))
                n_mols += int(batch["valid_mask"].sum())
            throughput = n_mols * accelerator.num_processes / max(epoch_timer.elapsed, 1e-9)
            val_scores, val_labels = _predict(model, val_loader, accelerator)
            val_value, val_metrics = _metric(task_type, val_labels, val_scores)
            record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "molecules_per_s": throughput,
                      "val_" + ("roc_auc" if task_type == "classification" else "rmse"): abs(val_value)}
            log.write(record)
            progress.set_postfix(val=f"{abs(val_value):.4f}")
            improved = best_state is None or (not math.isnan(val_value) and (math.isnan(best["value"]) or val_value > best["value"]))
            if improved:
                test_scores, test_labels = _predict(model, test_loader, accelerator)
                _, test_metrics = _metric(task_type, test_labels, test_scores)
                best = {"value": val_value, "epoch": epoch, "validation": val_metrics, "test": test_metrics,
                        "test_scores": test_scores, "test_labels": test_labels}
                best_state = copy.deepcopy(accelerator.unwrap_model(model).state_dict())
                stale = 0
            else:
                stale += 1
                if stale >= args.patience:
                    break
        progress.close()
        curves = log.read()
        unwrapped = accelerator.unwrap_model(model)
        if best_state is not None:
            unwrapped.load_state_dict(best_state)
        if is_main and args.save_checkpoints:
            unwrapped.save_pretrained(run_dir / "best")
            processor.save_pretrained(run_dir / "best")
        run = {
            "seed": seed,
            "best_epoch": best.get("epoch"),
            "epochs_run": len(curves),
            "validation": best.get("validation"),
            "test": best.get("test"),
            "mean_epoch_molecules_per_s": float(np.mean([c["molecules_per_s"] for c in curves])) if curves else None,
            "curves": curves,
        }
        runs.append(run)
        if is_main:
            _plot_run(run_dir, task, best, curves)
        accelerator.free_memory()

    results = _summarise(args, task, runs, dsd, reports, timer.elapsed)
    if is_main:
        write_json(out / "results.json", results)
        (out / "results.md").write_text(results_markdown(results))
        if args.push_to_hub and args.save_checkpoints:
            from ..hub import push_to_hub

            best_run = max(runs, key=lambda r: (r["validation"] or {}).get("roc_auc", -(r["validation"] or {}).get("rmse", 0)))
            best_dir = out / f"seed_{best_run['seed']}" / "best"
            push_to_hub(MMSAForMolecularPropertyPrediction.from_pretrained(best_dir), processor, args.hub_model_id,
                        results=results)
        accelerator.print(results_markdown(results))
        accelerator.print(f"results written to {out / 'results.json'} and {out / 'results.md'}")
    return results


def _summarise(args, task, runs, dsd, reports, wall_seconds) -> dict[str, Any]:
    metric = "roc_auc" if task["task_type"] == "classification" else "rmse"
    values = [r["test"][metric] for r in runs if r["test"]]
    val_values = [r["validation"][metric] for r in runs if r["validation"]]
    summary = {
        "metric": metric,
        "test_mean": float(np.mean(values)) if values else float("nan"),
        "test_std": float(np.std(values)) if values else float("nan"),
        "validation_mean": float(np.mean(val_values)) if val_values else float("nan"),
        "validation_std": float(np.std(val_values)) if val_values else float("nan"),
    }
    if task["task_type"] == "regression":
        maes = [r["test"]["mae"] for r in runs if r["test"]]
        summary["test_mae_mean"], summary["test_mae_std"] = float(np.mean(maes)), float(np.std(maes))
    split = {name: [int(i) for i in dsd[name]["row_index"]] for name in dsd}
    return {
        "task": task,
        "args": asdict(args),
        "summary": summary,
        "runs": runs,
        "split": {"kind": args.split, "data_seed": args.data_seed, "indices": split},
        "featurization": reports,
        "wall_seconds": wall_seconds,
        "environment": environment_info(),
    }


def results_markdown(results: dict[str, Any]) -> str:
    """A Markdown table of the test (and validation) metric, mean ± std over seeds."""
    s, task = results["summary"], results["task"]
    scale = 100.0 if s["metric"] == "roc_auc" else 1.0
    label = "ROC-AUC × 100" if s["metric"] == "roc_auc" else "RMSE"
    lines = [
        f"| dataset | split | seeds | test {label} | validation {label} |",
        "|---|---|---|---|---|",
        f"| {task['name']} | {results['split']['kind']} | {len(results['runs'])} | "
        f"{scale * s['test_mean']:.2f} ± {scale * s['test_std']:.2f} | "
        f"{scale * s['validation_mean']:.2f} ± {scale * s['validation_std']:.2f} |",
    ]
    return "\n".join(lines) + "\n"


def _plot_run(run_dir: Path, task: dict[str, Any], best: dict[str, Any], curves: list[dict[str, Any]]) -> None:
    """Validation curves and, for classification, test ROC curves at the best-validation epoch."""
    keys = [k for k in ("train_loss", "val_roc_auc", "val_rmse", "molecules_per_s") if curves and k in curves[0]]
    plot_curves(curves, keys, run_dir / "validation_curves.png", title=f"{task['name']}: training", x_key="epoch")
    if task["task_type"] != "classification" or "test_scores" not in best:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    labels, scores = np.asarray(best["test_labels"]), np.asarray(best["test_scores"])
    labels, scores = labels.reshape(len(labels), -1), scores.reshape(len(scores), -1)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for t, name in enumerate(task["label_columns"][:12]):
        present = ~np.isnan(labels[:, t])
        if np.unique(labels[present, t]).size < 2:
            continue
        fpr, tpr, _ = roc_curve(labels[present, t], scores[present, t])
        ax.plot(fpr, tpr, lw=1, label=name[:24])
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{task['name']} test ROC (epoch {best['epoch']})")
    if len(task["label_columns"]) <= 12:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(run_dir / "test_roc.png", dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``scripts/finetune.py`` and ``mmsa finetune``."""
    import logging

    logging.basicConfig(level=os.environ.get("MMSA_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    run_finetuning(parse_args(argv))
