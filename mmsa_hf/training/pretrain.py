"""Self-supervised MMSA pretraining driven by Accelerate.

Shaped like Accelerate's own examples: ``Accelerator(mixed_precision, gradient_accumulation_steps,
project_config=ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=...))``,
``set_seed``, featurization under ``main_process_first()``, ``prepare``, ``accumulate`` /
``backward``, ``save_state`` every N steps and ``load_state`` + ``skip_first_batches`` on resume.
``scripts/pretrain.py`` and ``mmsa pretrain`` are thin entry points over :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .common import arguments_from_namespace as common_arguments_from_namespace
from .common import (
    IfOff,
    argument_help,
    dataclass_parser,
    parse_arguments,
    PRESET_IMAGE_SIZE,
    JsonlLog,
    apply_thread_policy,
    capped_num_proc,
    resolve_mixed_precision,
    build_processor,
    Timer,
    environment_info,
    latest_checkpoint,
    logger,
    plot_curves,
    resolve_model_config,
    views_for_config,
    write_json,
)
from ..atomic import atomic_directory
from .malloc import KEEP_FREED_MEMORY_HELP, keep_freed_memory_for_run

TRAINING_STATE_FILE = "mmsa_training_state.json"


@dataclass
class PretrainArguments:
    """Every setting of a pretraining run (saved as ``run_config.json``); the command line is generated from these
    fields by ``transformers.HfArgumentParser`` (each ``--a_flag`` is also accepted as ``--a-flag``)."""

    config: str = field(default="small", metadata=argument_help("preset (tiny/small/base), config .json or checkpoint dir"))
    init_from: str | None = field(default=None, metadata=argument_help(
        "checkpoint folder whose weights (and config, and descriptor normaliser) start the run: continued pretraining"))
    output_dir: str = field(default="runs/pretrain-small", metadata=argument_help("run folder (checkpoints, final/, logs)"))
    corpus: str = field(default="moleculenet",
                        metadata=argument_help("'moleculenet' (default), a CSV/Parquet path or a Hub dataset id"))
    smiles_column: str | None = field(default=None, metadata=argument_help("SMILES column of a --corpus table"))
    include_test: bool = field(default=False, metadata=argument_help("keep downstream scaffold-test molecules in the corpus"))
    max_molecules: int | None = field(default=None, metadata=argument_help("seeded subsample of the corpus"))
    num_epochs: int = field(default=1, metadata=argument_help("passes over the corpus (unless --max_steps)"))
    max_steps: int | None = field(default=None, metadata=argument_help("optimizer steps; overrides --num_epochs"))
    time_budget_minutes: float | None = field(default=None,
                                              metadata=argument_help("stop training (and save) after this much wall time"))
    batch_size: int = field(default=64, metadata=argument_help("per-process batch size"))
    learning_rate: float = field(default=1e-3, metadata=argument_help("peak AdamW learning rate (warmup, then cosine)"))
    weight_decay: float = field(default=1e-5, metadata=argument_help("AdamW weight decay"))
    warmup_ratio: float = field(default=0.05, metadata=argument_help("linear warmup share of the steps"))
    max_grad_norm: float = field(default=5.0, metadata=argument_help("gradient clipping (0 = off)"))
    gradient_accumulation_steps: int = field(default=1, metadata=argument_help("batches per optimizer step"))
    mixed_precision: str = field(default="no", metadata=argument_help("autocast dtype", choices=["no", "fp16", "bf16"]))
    seed: int = field(default=0, metadata=argument_help("seed of the model, the data order and the subsample"))
    image_size: int | None = field(default=None, metadata=argument_help(f"depiction size; default by preset {PRESET_IMAGE_SIZE}"))
    num_proc: int = field(default=1, metadata=argument_help("processes for featurization (datasets.map)"))
    dataloader_workers: int = field(default=0, metadata=argument_help("DataLoader worker processes"))
    keep_freed_memory: bool = field(default=True, metadata=argument_help(KEEP_FREED_MEMORY_HELP))
    compile_geometry: bool = field(default=True, metadata=argument_help(
        "CPU: run the 3D encoder's message passing through torch.compile (same maths, fused; compiles at the "
        "first step, falls back to eager with a warning if it cannot)"))
    checkpointing_steps: int = field(default=200, metadata=argument_help("save a resumable checkpoint every N steps (0 = off)"))
    checkpoint_total_limit: int = field(default=2, metadata=argument_help("checkpoints kept"))
    resume_from_checkpoint: str | None = field(default=None, metadata=argument_help("checkpoint folder, or 'latest'"))
    log_every: int = field(default=10, metadata=argument_help("steps between metrics.jsonl records"))
    no_image: bool = field(default=False, metadata=argument_help("ablation: disable the image view"))
    no_geometry: bool = field(default=False, metadata=argument_help("ablation: disable the 3D view"))
    no_hypergraph: bool = field(default=False, metadata=argument_help("ablation: disable the hypergraph"))
    no_memory: bool = field(default=False, metadata=argument_help("ablation: disable the memory bank"))
    no_masked_attributes: bool = field(
        default=False, metadata=argument_help("ablation: no masked atom/bond attribute term (masked_atom_ratio=0)"))
    descriptor_targets: bool = field(
        default=False,
        metadata=argument_help("add the descriptor term: regress ~210 normalised RDKit descriptors from the pooled 2D encoder"))
    fingerprint_targets: bool = field(
        default=False,
        metadata=argument_help("add the fingerprint term: predict each molecule's folded Morgan bits (ECFP4, 2048 bits "
                               "unless the config sets num_fingerprint_bits) from the pooled 2D encoder"))
    assay_targets: bool = field(
        default=False,
        metadata=argument_help("add the assay term: predict each molecule's measured outcomes in the 535 binary assays "
                               "of ToxCast (without TOX21_*), HIV and MUV from the pooled 2D encoder (Hu et al. 2020's "
                               "supervised pretraining; no fine-tuning benchmark set is read)"))
    legacy_objectives: bool = field(
        default=False,
        metadata=argument_help("ablation: the first implementation's objective (no masked attributes, "
                       "memory_space='fused_ema', hypergraph_consistency_target='fused')"))
    config_overrides: str | None = field(
        default=None, metadata=argument_help('JSON object of MMSAConfig fields, e.g. \'{"masked_atom_ratio": 0.25}\''))
    cpu: bool = field(default=False, metadata=argument_help("force CPU even where CUDA is available"))
    push_to_hub: bool = field(default=False, metadata=argument_help("push final/ to the Hub (needs --hub_model_id)"))
    hub_model_id: str | None = field(default=None, metadata=argument_help("namespace/name of the Hub repo"))
    hub_private: bool = field(default=False, metadata=argument_help("create the Hub repo private"))

    def __post_init__(self):
        if self.config_overrides is not None:
            _json_object(self.config_overrides)
        if self.init_from is not None and not Path(self.init_from, "config.json").is_file():
            raise ValueError(f"--init_from {self.init_from!r}: not a checkpoint folder (no config.json in it)")
        if self.init_from is not None and self.config != "small":
            raise ValueError("--init_from takes its architecture from the checkpoint: drop --config "
                             f"{self.config!r} (use --config_overrides for settings such as loss weights)")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id (e.g. my-org/mmsa-small)")

    @property
    def extra_config(self) -> dict[str, Any]:
        """``--config_overrides`` as a dict."""
        return _json_object(self.config_overrides) if self.config_overrides else {}


DESCRIPTION = "Self-supervised MMSA pretraining (image + 2D graph + 3D views, hypergraph, memory bank)."
EXAMPLES = (
    "examples:\n"
    "  accelerate launch --cpu --num_processes 1 scripts/pretrain.py --config small\n"
    "  accelerate launch scripts/pretrain.py --config tiny --max_molecules 256 --max_steps 20\n"
    "  accelerate launch --multi_gpu --mixed_precision bf16 scripts/pretrain.py --config base \\\n"
    "      --corpus ../shared/data/pretrain/moses_train_250k.csv.gz --num_epochs 10 --batch_size 256\n"
    "  accelerate launch scripts/pretrain.py --resume_from_checkpoint latest --output_dir runs/pretrain-small\n"
)


def build_parser(prog: str = "pretrain", add_help: bool = True) -> argparse.ArgumentParser:
    """The command line of :class:`PretrainArguments`."""
    return dataclass_parser(PretrainArguments, prog, DESCRIPTION, EXAMPLES, add_help)


def _json_object(text: str) -> dict[str, Any]:
    """``--config_overrides`` value: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--config_overrides {text!r} is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--config_overrides: expected a JSON object, got {text!r}")
    return value


def arguments_from_namespace(namespace: argparse.Namespace) -> PretrainArguments:
    """:class:`PretrainArguments` from a parsed namespace (the CLI's extra keys ignored)."""
    return common_arguments_from_namespace(PretrainArguments, namespace)


def parse_args(argv: Sequence[str] | None = None) -> PretrainArguments:
    """Parse command-line options into :class:`PretrainArguments` (a bad value or combination exits 2)."""
    return parse_arguments(build_parser(), PretrainArguments, argv)


def _config_overrides(args: PretrainArguments) -> dict[str, Any]:
    overrides: dict[str, Any] = dict(args.extra_config)
    if args.no_image:
        overrides["use_image"] = False
    if args.no_geometry:
        overrides["use_geometry"] = False
    if args.no_hypergraph:
        overrides["use_hypergraph"] = False
    if args.no_memory:
        overrides["use_memory"] = False
    if args.no_masked_attributes or args.legacy_objectives:
        overrides["masked_atom_ratio"] = 0.0
    if args.legacy_objectives:
        overrides.update(memory_space="fused_ema", hypergraph_consistency_target="fused")
    if args.descriptor_targets:
        from ..data.descriptors import descriptor_names

        overrides["num_descriptors"] = len(descriptor_names())
    # IfOff: a continued run (--init_from) keeps the width of the head its checkpoint already has.
    if args.fingerprint_targets and "num_fingerprint_bits" not in overrides:
        overrides["num_fingerprint_bits"] = IfOff(DEFAULT_FINGERPRINT_BITS)
    if args.assay_targets and "assay_tasks" not in overrides:
        from ..data.assays import assay_task_names

        overrides["assay_tasks"] = IfOff(assay_task_names())
    return overrides


DEFAULT_FINGERPRINT_BITS = 2048


def _descriptor_normalizer(featurized, seed: int, sample_size: int = 20000):
    """The CDF normaliser of the descriptor targets, fitted on a seeded sample of the featurised corpus."""
    import numpy as np

    from ..data.descriptors import DESCRIPTOR_COLUMN, DescriptorNormalizer, descriptor_names

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(featurized), size=min(sample_size, len(featurized)), replace=False))
    values = np.asarray(featurized.select_columns([DESCRIPTOR_COLUMN]).select(rows)[DESCRIPTOR_COLUMN], dtype=np.float64)
    return DescriptorNormalizer.fit(values, descriptor_names())


def _descriptor_normalizer_for(args: PretrainArguments, featurized):
    """The ``--init_from`` checkpoint's normaliser when it has one (so its descriptor head keeps the targets it
    learned), otherwise one fitted on this corpus."""
    from ..data.descriptors import NORMALIZER_FILE, DescriptorNormalizer

    if args.init_from is not None and Path(args.init_from, NORMALIZER_FILE).is_file():
        return DescriptorNormalizer.load(Path(args.init_from, NORMALIZER_FILE))
    return _descriptor_normalizer(featurized, args.seed)


def _scalar_terms(outputs: Any) -> dict[str, float]:
    """Every scalar tensor of a model output (the loss terms and counters), as floats."""
    terms: dict[str, float] = {}
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            terms[key] = float(value.detach().float().item())
    return terms


@dataclass
class _Progress:
    """Counters of a run (``batches_seen`` locates the data position for an exact resume)."""

    global_step: int = 0
    batches_seen: int = 0
    molecules_seen: int = 0
    train_seconds: float = 0.0
    stopped_early: bool = False


def run_pretraining(args: PretrainArguments) -> Path:
    """Run one pretraining job; returns the directory holding the final model and processor."""
    from accelerate.utils import set_seed

    from ..modeling import MMSAForPreTraining

    timer = Timer()
    output_dir = Path(args.output_dir)
    accelerator = _build_accelerator(args, output_dir)
    set_seed(args.seed)
    threads = apply_thread_policy(accelerator.num_processes, args.dataloader_workers)
    keep_freed_memory_for_run(args.keep_freed_memory, accelerator.device)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    config = resolve_model_config(args.init_from or args.config, _config_overrides(args))
    data = _prepare_data(args, accelerator, config, capped_num_proc(args.num_proc, threads))
    model = _initial_model(args, config)
    compile_geometry_for_run(model, args.compile_geometry, accelerator.device)
    optimizer = _adamw(model, args)
    steps_per_epoch = math.ceil(len(data["loader"]) / args.gradient_accumulation_steps)  # before `prepare` shards it
    total_steps = args.max_steps or steps_per_epoch * args.num_epochs
    scheduler = _cosine_schedule(optimizer, args.warmup_ratio, total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, data["loader"], scheduler)
    log = JsonlLog(output_dir / "metrics.jsonl", enabled=accelerator.is_main_process)
    progress = _resume(accelerator, args.resume_from_checkpoint, output_dir, log)
    run_config = _run_config(args, config, data["processor"], total_steps, steps_per_epoch, accelerator)
    if accelerator.is_main_process:
        write_json(output_dir / "run_config.json", run_config)
        write_json(output_dir / "corpus.json", data["corpus_info"])
        if data["normalizer"] is not None:
            data["normalizer"].save(output_dir / data["normalizer_file"])
    num_epochs = math.ceil(total_steps / max(steps_per_epoch, 1))
    _train(args, accelerator, model, optimizer, scheduler, loader, log, progress, total_steps, num_epochs, timer)
    accelerator.wait_for_everyone()
    final_dir = output_dir / "final"
    if accelerator.is_main_process:
        _save_final(args, accelerator, model, data, run_config, progress, total_steps, timer, log, final_dir)
    accelerator.end_training()
    return final_dir


def _initial_model(args: PretrainArguments, config):
    """A freshly initialised model, or (``--init_from``) the checkpoint's weights under the run's config; weights the
    checkpoint lacks (a newly switched-on head) are initialised and logged by ``from_pretrained``."""
    from ..modeling import MMSAForPreTraining

    if args.init_from is None:
        return MMSAForPreTraining(config)
    return MMSAForPreTraining.from_pretrained(args.init_from, config=config)


def compile_geometry_for_run(model, enabled: bool, device) -> bool:
    """``compile_message_passing`` of the 3D encoder when ``enabled``, training runs on the CPU and the model has
    a 3D encoder; logged. Returns whether it was switched on. The speed benchmark builds its variants with it too."""
    encoder = model.mmsa.geometry_encoder
    if not enabled or device.type != "cpu" or encoder is None:
        return False
    encoder.compile_message_passing()
    logger.info("3D encoder: message passing through torch.compile (inductor, dynamic shapes); "
                "--no_compile_geometry runs it eagerly")
    return True


def _build_accelerator(args: PretrainArguments, output_dir: Path):
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    on_cpu = args.cpu or not torch.cuda.is_available()
    return Accelerator(
        cpu=args.cpu,
        mixed_precision=resolve_mixed_precision(args.mixed_precision, on_cpu),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), automatic_checkpoint_naming=True, total_limit=args.checkpoint_total_limit,
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )


def _adamw(model, args: PretrainArguments) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel: the same update rule in one pass over every parameter (CPU and CUDA), 16.8 ->
    3.8 ms an optimizer step for the 178 tensors of `small` on one core; the foreach default would loop per tensor."""
    return torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay, fused=True)


def _prepare_data(args: PretrainArguments, accelerator, config, num_proc: int) -> dict[str, Any]:
    """The processor of the views the model reads, the featurised corpus (with descriptors and Morgan bits when
    asked), its description, the descriptor normaliser and the seeded ``DataLoader``."""
    from ..data import MMSACollator, corpus_description, featurize_dataset, featurize_report, load_pretraining_corpus
    from ..data.descriptors import NORMALIZER_FILE, add_descriptors
    from ..data.assays import add_assay_labels
    from ..data.fingerprints import add_fingerprints

    preset = args.config if args.config in PRESET_IMAGE_SIZE else "base"
    # Only the views this model reads: an ablation without 3D computes no conformer (same cache as before for the
    # full model, whose processor config omits `views`).
    processor = build_processor(image_size=args.image_size or PRESET_IMAGE_SIZE[preset],
                                views=views_for_config(config, model="backbone"))
    with accelerator.main_process_first():
        corpus = load_pretraining_corpus(args.corpus, smiles_column=args.smiles_column,
                                         exclude_test=not args.include_test, num_proc=num_proc)
        corpus_info = dict(corpus_description(corpus) or {})
        if args.max_molecules and args.max_molecules < len(corpus):
            # A seeded subsample, so a CPU run fits its time budget; recorded in corpus.json.
            corpus = corpus.shuffle(seed=args.seed).select(range(args.max_molecules))
            corpus_info["subsample"] = {"max_molecules": args.max_molecules, "seed": args.seed}
        featurized = featurize_dataset(corpus, processor, num_proc=num_proc, on_error="skip", accelerator=accelerator)
        corpus_info.update(featurization=featurize_report(featurized), molecules_used=len(featurized))
        if args.descriptor_targets and len(featurized):
            featurized = add_descriptors(featurized, num_proc=num_proc)
        if config.num_fingerprint_bits > 0 and len(featurized):
            featurized = add_fingerprints(featurized, config.fingerprint_radius, config.num_fingerprint_bits,
                                          num_proc=num_proc)
        if config.num_assay_tasks > 0 and len(featurized):
            featurized = add_assay_labels(featurized, config.assay_tasks, num_proc=num_proc)
    if len(featurized) == 0:
        raise ValueError(f"corpus {args.corpus!r}: no molecule survived featurization")
    normalizer = _descriptor_normalizer_for(args, featurized) if args.descriptor_targets else None
    loader = torch.utils.data.DataLoader(
        featurized, batch_size=args.batch_size, shuffle=True, drop_last=len(featurized) >= 2 * args.batch_size,
        collate_fn=MMSACollator(processor, descriptor_normalizer=normalizer,
                                fingerprint_bits=config.num_fingerprint_bits or None,
                                assay_tasks=config.num_assay_tasks or None), num_workers=args.dataloader_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )
    return {"processor": processor, "corpus_info": corpus_info, "normalizer": normalizer,
            "normalizer_file": NORMALIZER_FILE, "loader": loader}


def _cosine_schedule(optimizer, warmup_ratio: float, total_steps: int):
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)


def _resume(accelerator, resume: str | None, output_dir: Path, log: JsonlLog) -> _Progress:
    """Counters at the start: zero, or those of ``resume`` (a checkpoint folder or ``"latest"``) after
    ``load_state``; the metrics log is cut back to that step."""
    progress = _Progress()
    if not resume:
        return progress
    checkpoint = latest_checkpoint(output_dir) if resume == "latest" else Path(resume)
    if checkpoint is None or not checkpoint.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {resume!r}: no checkpoint found under {output_dir}")
    accelerator.load_state(str(checkpoint))
    state = json.loads((checkpoint / TRAINING_STATE_FILE).read_text())
    progress.global_step, progress.batches_seen = state["global_step"], state["batches_seen"]
    accelerator.project_configuration.iteration = state["save_iteration"] + 1
    log.truncate_after(progress.global_step)
    accelerator.print(f"resumed from {checkpoint} at step {progress.global_step} ({progress.batches_seen} batches)")
    return progress


def _run_config(args, config, processor, total_steps: int, steps_per_epoch: int, accelerator) -> dict[str, Any]:
    return {
        "args": asdict(args),
        "model_config": config.to_dict(),
        "processor": processor.to_dict() if hasattr(processor, "to_dict") else None,
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "num_processes": accelerator.num_processes,
        "environment": environment_info(),
    }


def _train(args, accelerator, model, optimizer, scheduler, loader, log, progress: _Progress, total_steps: int,
           num_epochs: int, timer: Timer) -> None:
    """Optimizer steps until ``total_steps`` or the time budget, from the data position in ``progress``
    (logging every ``log_every`` steps, a resumable checkpoint every ``checkpointing_steps``)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=progress.global_step, disable=not accelerator.is_main_process,
               desc="pretrain", unit="step")
    start_epoch, skip_batches = divmod(progress.batches_seen, len(loader))
    model.train()
    for epoch in range(start_epoch, num_epochs):
        loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, skip_batches) if epoch == start_epoch and skip_batches else loader
        if _train_epoch(args, accelerator, model, optimizer, scheduler, batches, epoch, log, progress, total_steps,
                        timer, bar):
            break
    bar.close()


def _train_epoch(args, accelerator, model, optimizer, scheduler, batches, epoch: int, log, progress: _Progress,
                 total_steps: int, timer: Timer, bar) -> bool:
    """One pass over ``batches``; True when the run must stop (step budget reached or time budget spent)."""
    step_timer = Timer()
    for batch in batches:
        batch.pop("row_index", None)
        with accelerator.accumulate(model):
            outputs = model(**batch)
            accelerator.backward(outputs.loss)
            if accelerator.sync_gradients and args.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        progress.batches_seen += 1
        progress.molecules_seen += int(batch["valid_mask"].sum()) * accelerator.num_processes
        if not accelerator.sync_gradients:
            continue
        progress.global_step += 1
        bar.update(1)
        progress.train_seconds += step_timer.elapsed
        step_timer = Timer()
        if progress.global_step % args.log_every == 0 or progress.global_step == total_steps:
            _log_step(log, bar, outputs, progress, epoch, scheduler.get_last_lr()[0])
        if args.checkpointing_steps and progress.global_step % args.checkpointing_steps == 0:
            _save_checkpoint(accelerator, progress.global_step, progress.batches_seen)
        over_budget = bool(args.time_budget_minutes) and timer.elapsed > 60 * args.time_budget_minutes
        if progress.global_step >= total_steps or over_budget:
            progress.stopped_early = progress.global_step < total_steps
            return True
    return False


def _log_step(log: JsonlLog, bar, outputs, progress: _Progress, epoch: int, lr: float) -> None:
    terms = _scalar_terms(outputs)
    log.write({"step": progress.global_step, "epoch": epoch, "lr": lr, **terms,
               "molecules_per_s": progress.molecules_seen / max(progress.train_seconds, 1e-9)})
    bar.set_postfix({k: f"{v:.3g}" for k, v in terms.items() if k in ("loss", "anchors_in_use")})


def _save_final(args, accelerator, model, data, run_config, progress: _Progress, total_steps: int, timer: Timer,
                log: JsonlLog, final_dir: Path) -> None:
    """``final/`` (model, processor, training info, normaliser) in one atomic step, the summary, the loss curves,
    the optional Hub push and the next-step hint."""
    unwrapped = accelerator.unwrap_model(model)
    summary = {
        "global_step": progress.global_step,
        "planned_steps": total_steps,
        "molecules_seen": progress.molecules_seen,
        "train_seconds": progress.train_seconds,
        "molecules_per_s": progress.molecules_seen / max(progress.train_seconds, 1e-9),
        "wall_seconds": timer.elapsed,
        "stopped_by_time_budget": progress.stopped_early,
    }
    training_info = {**run_config, "summary": summary, "corpus": data["corpus_info"]}
    with atomic_directory(final_dir) as staging:  # never a half-written final/ (an earlier one is kept)
        unwrapped.save_pretrained(staging, save_function=accelerator.save)
        data["processor"].save_pretrained(staging)
        write_json(staging / "training_info.json", training_info)
        if data["normalizer"] is not None:
            data["normalizer"].save(staging / data["normalizer_file"])
    output_dir = final_dir.parent
    write_json(output_dir / "summary.json", summary)
    records = log.read()
    keys = ["loss"] + sorted({k for r in records for k in r if k.endswith("_loss") and k != "loss"})
    plot_curves(records, keys + ["anchors_in_use"], output_dir / "loss_curves.png",
                title=f"MMSA pretraining ({args.config})", smooth=5)
    if args.push_to_hub:
        from ..hub import push_to_hub

        push_to_hub(unwrapped, data["processor"], args.hub_model_id, private=args.hub_private,
                    training_info=training_info)
    accelerator.print(
        f"\nPretrained model and processor saved to {final_dir} "
        f"({progress.global_step} steps, {summary['molecules_per_s']:.1f} molecules/s, {timer.elapsed / 60:.1f} min).\n"
        f"Next: fine-tune it, e.g.\n"
        f"  accelerate launch --cpu --num_processes 1 scripts/finetune.py --model {final_dir} --dataset bbbp --seeds 0 1 2\n"
    )


def _save_checkpoint(accelerator: Any, global_step: int, batches_seen: int) -> None:
    """``save_state`` plus the step counters needed to resume at the same data position."""
    iteration = accelerator.project_configuration.iteration
    accelerator.save_state()
    if accelerator.is_main_process:
        folder = Path(accelerator.project_dir) / "checkpoints" / f"checkpoint_{iteration}"
        write_json(folder / TRAINING_STATE_FILE,
                   {"global_step": global_step, "batches_seen": batches_seen, "save_iteration": iteration})
    accelerator.wait_for_everyone()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``scripts/pretrain.py`` and ``mmsa pretrain``."""
    import logging

    logging.basicConfig(level=os.environ.get("MMSA_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    run_pretraining(parse_args(argv))
