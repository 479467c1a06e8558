"""Fine-tuning and multi-seed evaluation of MMSA on MoleculeNet sets or CSVs.

One fine-tuning *cell* (one model, one seed, one pair of learning rates) is :func:`finetune_cell`:
Adam with separate backbone / head learning rates, linear warmup then cosine decay over a fixed
epoch budget (``transformers.get_cosine_schedule_with_warmup``, the pretraining schedule), gradient
clipping (max norm 5.0, as in pretraining), validation after every epoch. It reports the test metric
at the best-validation epoch (the headline metric) **and** at the last epoch. The CLI
(:func:`run_finetuning`, ``mmsa finetune``) and ``benchmarks/moleculenet.py`` both call it.

Data: a featurized split is turned once into a batch source. For graph-only fine-tuning
(``downstream_modalities=["graph"]``, the GraphMVP protocol) that is a
:class:`~mmsa_hf.training.graph_batches.GraphTensorSet` (the split pre-collated into tensors, batches
by index slicing); for other views, featurized rows collated per batch. Shuffling uses a
``torch.Generator`` seeded with the model seed, and the head is initialised from the model seed
alone, so a pretrained and a from-scratch model with the same seed see the same data order and
start from the same head (a paired comparison).

The data split is chosen by ``--split`` / ``--data_seed``, independently of the model seeds, and
saved with the results. With ``--save_checkpoints`` (default) the best-validation model of each
seed is saved with ``save_pretrained`` beside the processor of the views it needs.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .common import arguments_from_namespace as common_arguments_from_namespace
from .common import (
    argument_help,
    dataclass_parser,
    parse_arguments,
    PRESET_IMAGE_SIZE,
    JsonlLog,
    Timer,
    build_processor,
    environment_info,
    plot_curves,
    resolve_model_config,
    save_figure,
    write_json,
)
from ..atomic import atomic_directory, write_text_atomic
from .graph_batches import GraphTensorSet, RowCollatedSet
from .malloc import KEEP_FREED_MEMORY_HELP, keep_freed_memory_for_run
from .metrics import classification_metrics, regression_metrics


@dataclass
class FinetuneArguments:
    """Every setting of a fine-tuning run (saved in ``results.json``); the command line is generated from these
    fields by ``transformers.HfArgumentParser`` (each ``--a_flag`` is also accepted as ``--a-flag``)."""

    model: str | None = field(default=None, metadata=argument_help("pretrained checkpoint: a local directory or a Hub id"))
    from_scratch: bool = field(default=False, metadata=argument_help("random initialisation from --config instead of --model"))
    config: str = field(default="small",
                        metadata=argument_help("for --from_scratch: preset (tiny/small/base), config .json or checkpoint dir"))
    dataset: str = field(default="bbbp", metadata=argument_help("MoleculeNet name or a CSV/Parquet path / Hub dataset id"))
    smiles_column: str | None = field(default=None, metadata=argument_help("SMILES column of a --dataset table"))
    label_columns: list[str] | None = field(default=None, metadata=argument_help("label columns of a --dataset table"))
    task_type: str | None = field(default=None, metadata=argument_help("of a --dataset table",
                                                               choices=["classification", "regression"]))
    split: str = field(default="scaffold", metadata=argument_help("data split",
                                                          choices=["scaffold", "balanced_scaffold", "random"]))
    data_seed: int = field(default=0, metadata=argument_help("seed of the data split (balanced_scaffold/random)"))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata=argument_help("model seeds, one run each"))
    max_train_molecules: int | None = field(default=None, metadata=argument_help("use only the first N training molecules"))
    epochs: int = field(default=100, metadata=argument_help("fixed epoch budget (the LR schedule spans it)"))
    patience: int | None = field(default=None,
                                 metadata=argument_help("optional early stopping patience in epochs (default: off)"))
    batch_size: int = field(default=32, metadata=argument_help("molecules per step"))
    learning_rate: float = field(default=1e-3, metadata=argument_help("peak learning rate of the head"))
    backbone_learning_rate: float | None = field(
        default=None, metadata=argument_help("peak learning rate of the backbone (the pretrained part); "
                                     "defaults to --learning_rate"))
    frozen_backbone_epochs: int = field(default=0, metadata=argument_help(
        "LP-FT: train only the head for this many first epochs (backbone frozen, in eval mode), then everything; "
        "the schedule spans all epochs"))
    warmup_ratio: float = field(default=0.05, metadata=argument_help("linear warmup share of the steps, then cosine"))
    max_grad_norm: float = field(default=5.0, metadata=argument_help("gradient clipping (0 = off)"))
    weight_decay: float = field(default=0.0, metadata=argument_help("Adam weight decay"))
    dropout: float | None = field(
        default=None, metadata=argument_help("fine-tuning dropout of the GIN layers and the head (Hu et al. use 0.5); "
                                     "default: the checkpoint's"))
    downstream_modalities: list[str] | None = field(
        default=None, metadata=argument_help("views the property model reads", choices=["graph", "image", "geometry"]))
    image_size: int | None = field(default=None, metadata=argument_help("depiction size (image view only)"))
    mixed_precision: str = field(default="no", metadata=argument_help("autocast dtype", choices=["no", "fp16", "bf16"]))
    num_proc: int = field(default=1, metadata=argument_help("processes for featurization (datasets.map)"))
    output_dir: str = field(default="runs/finetune", metadata=argument_help("results.json, curves and the seed folders"))
    save_checkpoints: bool = field(default=True,
                                   metadata=argument_help("save the best-validation model of each seed (--no_save_checkpoints)"))
    cpu: bool = field(default=False, metadata=argument_help("force CPU even where CUDA is available"))
    keep_freed_memory: bool = field(default=True, metadata=argument_help(KEEP_FREED_MEMORY_HELP))
    push_to_hub: bool = field(default=False, metadata=argument_help("push the best seed's model (needs --hub_model_id)"))
    hub_model_id: str | None = field(default=None, metadata=argument_help("namespace/name of the Hub repo"))

    def __post_init__(self):
        if not self.model and not self.from_scratch:
            raise ValueError("give --model DIR_OR_HUB_ID (pretrained) or --from_scratch")
        if self.model and self.from_scratch:
            raise ValueError("--model and --from_scratch exclude each other")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id")
        if not 0 <= self.frozen_backbone_epochs < self.epochs:
            raise ValueError(f"--frozen_backbone_epochs must be in [0, --epochs={self.epochs}), got "
                             f"{self.frozen_backbone_epochs}")


DESCRIPTION = ("Fine-tune MMSA on a MoleculeNet set or a CSV; multi-seed, fixed epoch budget, test at the "
               "best-validation epoch and at the last epoch.")
EXAMPLES = (
    "examples:\n"
    "  accelerate launch --cpu --num_processes 1 scripts/finetune.py --model runs/pretrain-small/final --dataset bbbp\n"
    "  mmsa finetune --from_scratch --config small --dataset tox21 --seeds 0 1 2\n"
    "  mmsa finetune --model runs/pretrain-small/final --dataset bace --downstream_modalities graph \\\n"
    "      --learning_rate 1e-3 --backbone_learning_rate 1e-4 --epochs 100\n"
    "  mmsa finetune --model my-org/mmsa-small --dataset data.csv --smiles_column smiles \\\n"
    "      --label_columns y --task_type regression --split random\n"
)


def build_parser(prog: str = "finetune", add_help: bool = True) -> argparse.ArgumentParser:
    """The command line of :class:`FinetuneArguments`."""
    return dataclass_parser(FinetuneArguments, prog, DESCRIPTION, EXAMPLES, add_help)


def arguments_from_namespace(namespace: argparse.Namespace) -> FinetuneArguments:
    """:class:`FinetuneArguments` from a parsed namespace (the CLI's extra keys ignored)."""
    return common_arguments_from_namespace(FinetuneArguments, namespace)


def parse_args(argv: Sequence[str] | None = None) -> FinetuneArguments:
    """Parse command-line options into :class:`FinetuneArguments` (a bad value or combination exits 2)."""
    return parse_arguments(build_parser(), FinetuneArguments, argv)


# ------------------------------------------------------------------------------------------------ data


def load_task(dataset: str, split: str = "scaffold", data_seed: int = 0, num_proc: int = 1,
              label_columns: Sequence[str] | None = None, task_type: str | None = None,
              smiles_column: str | None = None):
    """(DatasetDict, task metadata dict) for a MoleculeNet name or a user table."""
    from ..data import MOLECULENET_TASKS, get_task, load_moleculenet, make_task

    if dataset.lower() in MOLECULENET_TASKS or dataset.lower() in ("lipo", "delaney"):
        task = get_task(dataset)
        dsd = load_moleculenet(task.name, split=split, seed=data_seed, num_proc=num_proc)
    else:
        if not label_columns or not task_type:
            raise ValueError(f"--dataset {dataset!r} is not a MoleculeNet name: give --label_columns and --task_type")
        task = make_task(dataset, list(label_columns), task_type, smiles_column=smiles_column or "smiles")
        dsd = load_moleculenet(task, data_files=dataset, split=split, seed=data_seed)
    return dsd, {"name": task.name, "task_type": task.task_type, "label_columns": list(task.label_columns)}


def config_views(config) -> tuple[str, ...]:
    """The views a fine-tuning model with ``config`` reads (``views_for_config`` when the package has it)."""
    from . import common

    helper = getattr(common, "views_for_config", None)
    return tuple(helper(config)) if helper is not None else tuple(config.downstream_modalities)


def processor_for_views(views: Sequence[str], image_size: int = 128, base=None):
    """A processor that featurizes only ``views`` (graph-only: no conformer, no depiction).

    ``base`` (e.g. a checkpoint's processor) gives the feature-extractor settings. Before
    ``build_processor`` accepted ``views``, the full processor is returned (correct, slower).
    """
    if "views" not in inspect.signature(build_processor).parameters:
        return base if base is not None else build_processor(image_size=image_size)
    settings: dict[str, Any] = {}
    if base is not None:
        if tuple(getattr(base, "views", ()) or ()) == tuple(views):
            return base
        from ..processing import MMSAFeatureExtractor

        names = [n for n in inspect.signature(MMSAFeatureExtractor.__init__).parameters if n not in ("self", "kwargs")]
        settings = {n: getattr(base.feature_extractor, n) for n in names if hasattr(base.feature_extractor, n)}
        image_size = getattr(base.image_processor, "image_size", image_size)
    return build_processor(image_size=image_size, views=tuple(views), **settings)


def featurize_splits(dsd, processor, num_proc: int = 1, accelerator=None):
    """Featurize every split (cached by ``datasets``; invalid molecules skipped and reported)."""
    from ..data import featurize_dataset, featurize_report

    featurized, reports = {}, {}
    for name, split in dsd.items():
        featurized[name] = featurize_dataset(split, processor, num_proc=num_proc, on_error="skip",
                                             accelerator=accelerator)
        reports[name] = featurize_report(featurized[name])
    return featurized, reports


def batch_sources(featurized, processor, label_columns: Sequence[str], views: Sequence[str]):
    """Per split, a :class:`GraphTensorSet` (graph-only views) or a :class:`RowCollatedSet`."""
    from ..data import MMSACollator

    if tuple(views) == ("graph",):
        return {name: GraphTensorSet.from_featurized(ds, label_columns) for name, ds in featurized.items()}
    collator = MMSACollator(processor, label_columns=label_columns)
    return {name: RowCollatedSet(ds, collator, label_columns) for name, ds in featurized.items()}


def train_label_matrix(train_split, label_columns: Sequence[str]) -> np.ndarray:
    """``[N, T]`` float64 labels of the training split (NaN = missing)."""
    columns = train_split.select_columns(list(label_columns))[:]
    values = [[np.nan if v is None else float(v) for v in columns[c]] for c in label_columns]
    return np.asarray(values, dtype=np.float64).T.reshape(-1, len(label_columns))


def task_overrides(task: dict[str, Any], train_labels: np.ndarray, dropout: float | None = None,
                   downstream_modalities: Sequence[str] | None = None) -> dict[str, Any]:
    """Config overrides of the property head for ``task`` (labels, problem type, label scaling, dropout)."""
    label_columns, task_type = task["label_columns"], task["task_type"]
    multi = len(label_columns) > 1
    overrides: dict[str, Any] = {
        "num_labels": len(label_columns),
        "id2label": dict(enumerate(label_columns)),  # task names, used by `mmsa predict` for its columns
        "problem_type": ("multi_label" if multi else "binary") if task_type == "classification" else "regression",
    }
    if task_type == "regression":
        overrides["label_mean"] = np.nanmean(train_labels, axis=0).tolist()
        overrides["label_std"] = np.maximum(np.nanstd(train_labels, axis=0), 1e-6).tolist()
    if dropout is not None:
        overrides["graph_dropout"] = dropout
        overrides["classifier_dropout"] = dropout
    if downstream_modalities:
        overrides["downstream_modalities"] = list(downstream_modalities)
    return overrides


# ------------------------------------------------------------------------------------------------ model


def model_config(pretrained: str | None, config: str, overrides: dict[str, Any]):
    """The fine-tuning config: the checkpoint's (``pretrained``: a directory or Hub id) or ``config``'s,
    with ``overrides``."""
    if pretrained and not Path(pretrained).is_dir():
        from ..modeling import MMSAConfig

        return MMSAConfig.from_pretrained(pretrained, **overrides)
    return resolve_model_config(pretrained or config, overrides)


def build_model(pretrained: str | None, config: str, overrides: dict[str, Any], seed: int):
    """A property-prediction model: the backbone of ``pretrained`` (a checkpoint of any MMSA class) or
    a fresh one from ``config``; the head is initialised from ``seed`` alone (:func:`reset_head`)."""
    from accelerate.utils import set_seed

    from ..modeling import MMSAForMolecularPropertyPrediction

    set_seed(seed)
    if pretrained:
        model = MMSAForMolecularPropertyPrediction.from_pretrained(pretrained, **overrides)
    else:
        model = MMSAForMolecularPropertyPrediction(resolve_model_config(config, overrides))
    reset_head(model, seed)
    return model


def reset_head(model, seed: int) -> None:
    """Re-initialise the property head from ``seed`` only (PyTorch's default ``Linear`` init, as the model's
    ``_init_weights``), so a pretrained and a from-scratch model with the same seed start from the same head."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.classifier.modules():
            if module is not model.classifier and hasattr(module, "reset_parameters"):
                module.reset_parameters()


# ------------------------------------------------------------------------------------------------ one cell


@dataclass
class CellSettings:
    """Optimisation settings of one fine-tuning cell."""

    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 1e-3  # head
    backbone_learning_rate: float | None = None  # None: same as the head
    warmup_ratio: float = 0.05
    max_grad_norm: float = 5.0  # 0: no clipping
    weight_decay: float = 0.0
    patience: int | None = None  # None: the whole budget
    eval_batch_size: int = 256
    keep_best_state: bool = False  # keep the best-validation weights (to save them)
    log_steps: bool = False  # record the learning rates and gradient norm of every step
    frozen_backbone_epochs: int = 0  # LP-FT: train only the head for this many first epochs


def build_optimizer(model, settings: CellSettings) -> torch.optim.Optimizer:
    """Adam with two parameter groups: the backbone (``model.mmsa``) and the head."""
    prefix = model.base_model_prefix + "."
    backbone = [p for n, p in model.named_parameters() if n.startswith(prefix)]
    head = [p for n, p in model.named_parameters() if not n.startswith(prefix)]
    backbone_lr = settings.backbone_learning_rate or settings.learning_rate
    return torch.optim.Adam([{"params": backbone, "lr": backbone_lr, "name": "backbone"},
                             {"params": head, "lr": settings.learning_rate, "name": "head"}],
                            weight_decay=settings.weight_decay)


def build_scheduler(optimizer, settings: CellSettings, steps_per_epoch: int):
    """Linear warmup over ``warmup_ratio`` of the steps, then cosine decay to 0 at the last step."""
    from transformers import get_cosine_schedule_with_warmup

    total = settings.epochs * steps_per_epoch
    return get_cosine_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total), total)


def _to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _clip(model, max_norm: float, accelerator=None) -> float | None:
    if not max_norm:
        return None
    clip = accelerator.clip_grad_norm_ if accelerator is not None else torch.nn.utils.clip_grad_norm_
    return float(clip(model.parameters(), max_norm))


def _set_requires_grad(parameters: list[torch.nn.Parameter], on: bool) -> None:
    for parameter in parameters:
        parameter.requires_grad_(on)


def train_one_epoch(model, optimizer, scheduler, data, settings: CellSettings, generator: torch.Generator,
                    accelerator=None, step_log: list | None = None, frozen_backbone: bool = False) -> dict[str, float]:
    """One pass over ``data`` in the order drawn from ``generator``; returns loss and throughput.
    ``frozen_backbone``: the backbone runs in eval mode (dropout off, normalisation statistics fixed)."""
    model.train()
    if frozen_backbone:
        (accelerator.unwrap_model(model) if accelerator is not None else model).base_model.eval()
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    autocast = accelerator.autocast if accelerator is not None else nullcontext
    timer, cpu_start, losses, molecules = Timer(), time.process_time(), [], 0
    for batch in data.batches(settings.batch_size, generator):
        batch = _to_device(batch, device)
        with autocast():
            loss = model(**batch).loss
        accelerator.backward(loss) if accelerator is not None else loss.backward()
        grad_norm = _clip(model, settings.max_grad_norm, accelerator)
        if step_log is not None:
            step_log.append({"lr": [g["lr"] for g in optimizer.param_groups], "grad_norm": grad_norm})
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        molecules += int(batch["valid_mask"].sum())
    seconds = timer.elapsed
    return {"train_loss": float(np.mean(losses)), "molecules": molecules, "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu_start, "molecules_per_s": molecules / max(seconds, 1e-9)}


def predict(model, data, batch_size: int = 256, accelerator=None) -> np.ndarray:
    """Probabilities (classification) or de-normalised predictions (regression) of ``data``, in order."""
    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    model.eval()
    scores = []
    with torch.no_grad():
        for batch in data.batches(batch_size):
            batch.pop("labels", None)
            logits = model(**_to_device(batch, device)).logits
            scores.append(unwrapped.predict_from_logits(logits).float().cpu().numpy())
    model.train()
    return np.concatenate(scores)


def score(task_type: str, labels: np.ndarray, scores: np.ndarray) -> tuple[float, dict[str, Any]]:
    """(selection value where higher is better, full metric dict): ROC-AUC, or minus the RMSE."""
    if task_type == "classification":
        result = classification_metrics(labels, scores)
        return result["roc_auc"], result
    result = regression_metrics(labels, scores)
    return -result["rmse"], result


def evaluate(model, data, task_type: str, batch_size: int = 256, accelerator=None):
    """(selection value, metric dict, scores) of ``model`` on ``data``."""
    scores = predict(model, data, batch_size, accelerator)
    value, metrics = score(task_type, data.labels.numpy(), scores)
    return value, metrics, scores


@dataclass
class _Best:
    """The best-validation epoch seen so far (NaN never beats a number; the first epoch always counts)."""

    value: float = -math.inf
    epoch: int | None = None
    validation: dict | None = None
    test: dict | None = None
    test_scores: np.ndarray | None = None
    state: dict | None = None

    def improved_by(self, value: float) -> bool:
        if self.epoch is None:
            return True
        return not math.isnan(value) and (math.isnan(self.value) or value > self.value)


def finetune_cell(model, splits: dict[str, Any], task_type: str, settings: CellSettings, seed: int,
                  accelerator=None, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Fine-tune ``model`` on ``splits["train"]`` for ``settings.epochs`` epochs; select on validation only.

    The data order comes from ``torch.Generator().manual_seed(seed)`` and the dropout stream from
    ``torch.manual_seed(seed)``. Returns a JSON-able summary (best-validation epoch with its validation and
    test metrics, the last epoch with its metrics, per-epoch curves, throughput), plus ``best_state`` /
    ``best_test_scores`` (not JSON) and ``steps`` when ``settings.log_steps``.
    """
    optimizer = build_optimizer(model, settings)
    scheduler = build_scheduler(optimizer, settings, math.ceil(len(splits["train"]) / settings.batch_size))
    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    best, curves, steps = _Best(), [], ([] if settings.log_steps else None)
    last: dict[str, Any] = {}
    # LP-FT (Kumar et al. 2022): for the first epochs the backbone's trainable parameters take no gradient, so Adam
    # leaves them and their moments untouched; parameters frozen by design (EMA memory anchors) stay frozen.
    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    trainable = [p for p in unwrapped.base_model.parameters() if p.requires_grad] if settings.frozen_backbone_epochs \
        else []
    for epoch in range(settings.epochs):
        frozen = epoch < settings.frozen_backbone_epochs
        _set_requires_grad(trainable, not frozen)
        record = {"epoch": epoch, **train_one_epoch(model, optimizer, scheduler, splits["train"], settings,
                                                    generator, accelerator, steps, frozen_backbone=frozen)}
        last = _validate_epoch(model, splits, task_type, settings, accelerator, record, best)
        curves.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if settings.patience and epoch - best.epoch >= settings.patience:
            break
    _set_requires_grad(trainable, True)
    if "test" not in last:
        _, last["test"], _ = evaluate(model, splits["test"], task_type, settings.eval_batch_size, accelerator)
    return _cell_summary(seed, best, last, curves, steps)


def _validate_epoch(model, splits, task_type, settings, accelerator, record, best: _Best) -> dict[str, Any]:
    """Validation metric of this epoch into ``record``; test metric too when validation improved."""
    value, validation, _ = evaluate(model, splits["validation"], task_type, settings.eval_batch_size, accelerator)
    key = "val_roc_auc" if task_type == "classification" else "val_rmse"
    record[key] = abs(value)
    epoch_metrics = {"epoch": record["epoch"], "validation": validation}
    if best.improved_by(value):
        _, test, test_scores = evaluate(model, splits["test"], task_type, settings.eval_batch_size, accelerator)
        best.value, best.epoch, best.validation, best.test, best.test_scores = value, record["epoch"], \
            validation, test, test_scores
        if settings.keep_best_state:
            unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
            best.state = copy.deepcopy(unwrapped.state_dict())
        epoch_metrics["test"] = test
    return epoch_metrics


def _cell_summary(seed, best: _Best, last, curves, steps) -> dict[str, Any]:
    seconds = sum(c["seconds"] for c in curves)
    summary = {
        "seed": seed,
        "best_epoch": best.epoch,
        "validation": best.validation,
        "test": best.test,
        "last_epoch": last["epoch"],
        "last_validation": last["validation"],
        "last_test": last["test"],
        "epochs_run": len(curves),
        "train_seconds": seconds,
        "train_cpu_seconds": sum(c["cpu_seconds"] for c in curves),
        "mean_epoch_molecules_per_s": sum(c["molecules"] for c in curves) / max(seconds, 1e-9),
        "curves": curves,
        "best_state": best.state,
        "best_test_scores": best.test_scores,
    }
    if steps is not None:
        summary["steps"] = steps
    return summary


# ------------------------------------------------------------------------------------------------ CLI run


def cell_settings(args: FinetuneArguments, keep_best_state: bool = False) -> CellSettings:
    """The :class:`CellSettings` of the CLI arguments."""
    return CellSettings(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                        backbone_learning_rate=args.backbone_learning_rate, warmup_ratio=args.warmup_ratio,
                        max_grad_norm=args.max_grad_norm, weight_decay=args.weight_decay, patience=args.patience,
                        keep_best_state=keep_best_state, frozen_backbone_epochs=args.frozen_backbone_epochs)


def prepare_data(args: FinetuneArguments, accelerator=None) -> dict[str, Any]:
    """Split, config overrides, the processor of the needed views, featurized batch sources."""
    dsd, task = load_task(args.dataset, args.split, args.data_seed, args.num_proc, args.label_columns,
                          args.task_type, args.smiles_column)
    if args.max_train_molecules:
        dsd["train"] = dsd["train"].select(range(min(args.max_train_molecules, len(dsd["train"]))))
    labels = train_label_matrix(dsd["train"], task["label_columns"])
    overrides = task_overrides(task, labels, args.dropout, args.downstream_modalities)
    views = config_views(model_config(args.model, args.config, overrides))
    preset = args.config if args.config in PRESET_IMAGE_SIZE else "small"
    base = None
    if args.model:
        from transformers import AutoProcessor

        base = AutoProcessor.from_pretrained(args.model)
    processor = processor_for_views(views, args.image_size or PRESET_IMAGE_SIZE[preset], base)
    context = accelerator.main_process_first() if accelerator is not None else nullcontext()
    with context:
        featurized, reports = featurize_splits(dsd, processor, args.num_proc, accelerator)
    return {"dsd": dsd, "task": task, "overrides": overrides, "processor": processor, "reports": reports,
            "splits": batch_sources(featurized, processor, task["label_columns"], views)}


def run_finetuning(args: FinetuneArguments) -> dict[str, Any]:
    """Fine-tune over ``args.seeds``; write results JSON/Markdown/PNGs; return the results dict."""
    from accelerate import Accelerator

    timer = Timer()
    out = Path(args.output_dir)
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)
    keep_freed_memory_for_run(args.keep_freed_memory, accelerator.device)
    data = prepare_data(args, accelerator)
    settings = cell_settings(args, keep_best_state=args.save_checkpoints)
    runs = [_run_seed(args, seed, data, settings, accelerator, out / f"seed_{seed}") for seed in args.seeds]
    results = _summarise(args, data["task"], runs, data["dsd"], data["reports"], timer.elapsed)
    if accelerator.is_main_process:
        write_json(out / "results.json", results)
        write_text_atomic(out / "results.md", results_markdown(results))
        if args.push_to_hub and args.save_checkpoints:
            _push_best(args, runs, data["processor"], results, out)
        accelerator.print(results_markdown(results))
        accelerator.print(f"results written to {out / 'results.json'} and {out / 'results.md'}")
    return results


def _run_seed(args, seed, data, settings, accelerator, run_dir: Path) -> dict[str, Any]:
    """One seed of the CLI: build, fine-tune, log the curves, save the best checkpoint and the plots."""
    from tqdm.auto import tqdm

    is_main = accelerator.is_main_process
    model = build_model(args.model, args.config, data["overrides"], seed)
    log = JsonlLog(run_dir / "curves.jsonl", enabled=is_main)
    if is_main and log.path.exists():
        log.path.unlink()
    progress = tqdm(total=settings.epochs, desc=f"{data['task']['name']} seed {seed}", disable=not is_main,
                    unit="epoch")

    def on_epoch(record: dict[str, Any]) -> None:
        log.write(record)
        progress.update(1)

    run = finetune_cell(model, data["splits"], data["task"]["task_type"], settings, seed, accelerator, on_epoch)
    progress.close()
    best_state, test_scores = run.pop("best_state"), run.pop("best_test_scores")
    if is_main and args.save_checkpoints:
        model.load_state_dict(best_state)
        with atomic_directory(run_dir / "best") as staging:  # never a half-written best/
            model.save_pretrained(staging)
            data["processor"].save_pretrained(staging)
    if is_main:
        _plot_run(run_dir, data["task"], run, test_scores, data["splits"]["test"].labels.numpy())
    accelerator.free_memory()
    return run


def _push_best(args, runs, processor, results, out: Path) -> None:
    from ..hub import push_to_hub
    from ..modeling import MMSAForMolecularPropertyPrediction

    metric = results["summary"]["metric"]
    sign = 1.0 if metric == "roc_auc" else -1.0
    best_run = max(runs, key=lambda r: sign * (r["validation"] or {}).get(metric, -math.inf * sign))
    best_dir = out / f"seed_{best_run['seed']}" / "best"
    push_to_hub(MMSAForMolecularPropertyPrediction.from_pretrained(best_dir), processor, args.hub_model_id,
                results=results)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return (float(np.mean(values)), float(np.std(values))) if values else (float("nan"), float("nan"))


def _summarise(args, task, runs, dsd, reports, wall_seconds) -> dict[str, Any]:
    metric = "roc_auc" if task["task_type"] == "classification" else "rmse"
    summary: dict[str, Any] = {"metric": metric, "selection": "test at the best-validation epoch (headline)"}
    for prefix, key in (("test", "test"), ("validation", "validation"), ("last_test", "last_test")):
        values = [r[key][metric] for r in runs if r[key]]
        summary[f"{prefix}_mean"], summary[f"{prefix}_std"] = _mean_std(values)
    if task["task_type"] == "regression":
        summary["test_mae_mean"], summary["test_mae_std"] = _mean_std([r["test"]["mae"] for r in runs if r["test"]])
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
    """A Markdown table of the test metric at the best-validation epoch and at the last epoch (mean ± std)."""
    s, task = results["summary"], results["task"]
    scale = 100.0 if s["metric"] == "roc_auc" else 1.0
    label = "ROC-AUC × 100" if s["metric"] == "roc_auc" else "RMSE"

    def cell(prefix: str) -> str:
        return f"{scale * s[prefix + '_mean']:.2f} ± {scale * s[prefix + '_std']:.2f}"

    lines = [
        f"| dataset | split | seeds | test {label} (best-validation epoch) | test {label} (last epoch) "
        f"| validation {label} |",
        "|---|---|---|---|---|---|",
        f"| {task['name']} | {results['split']['kind']} | {len(results['runs'])} | {cell('test')} | "
        f"{cell('last_test')} | {cell('validation')} |",
    ]
    return "\n".join(lines) + "\n"


def _plot_run(run_dir: Path, task: dict[str, Any], run: dict[str, Any], test_scores, test_labels) -> None:
    """Training curves and, for classification, test ROC curves at the best-validation epoch."""
    curves = run["curves"]
    keys = [k for k in ("train_loss", "val_roc_auc", "val_rmse", "molecules_per_s") if curves and k in curves[0]]
    plot_curves(curves, keys, run_dir / "validation_curves.png", title=f"{task['name']}: training", x_key="epoch")
    if task["task_type"] != "classification" or test_scores is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    labels, scores = np.asarray(test_labels), np.asarray(test_scores)
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
    ax.set_title(f"{task['name']} test ROC (epoch {run['best_epoch']})")
    if len(task["label_columns"]) <= 12:
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, run_dir / "test_roc.png")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``scripts/finetune.py`` and ``mmsa finetune``."""
    import logging

    logging.basicConfig(level=os.environ.get("MMSA_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    run_finetuning(parse_args(argv))
