"""Pieces shared by the pretraining and fine-tuning loops."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from ..atomic import atomic_open, atomic_path

logger = logging.getLogger("mmsa_hf.training")

#: Image side length used with each preset unless ``--image_size`` says otherwise (our choice:
#: smaller depictions keep CPU runs affordable; ``base`` uses the ResNet-18 standard 224 px). ``small``: 112 px
#: since issue 10 (128 before; adopted with a 3x3 stem by the proxy rule in benchmarks/results/speed_selection.md).
PRESET_IMAGE_SIZE = {"tiny": 64, "small": 112, "base": 224}


@dataclass(frozen=True)
class IfOff:
    """An override applied only where the base config has the field off (0, empty or None), e.g. a switched-on
    pretraining term that must keep the head width of the checkpoint it continues."""

    value: Any


def _applicable(overrides: dict[str, Any], base) -> dict[str, Any]:
    """``overrides`` with each :class:`IfOff` resolved against ``base`` (dropped where ``base`` has it on)."""
    out = {}
    for key, value in overrides.items():
        if isinstance(value, IfOff):
            if getattr(base, key, None):
                continue
            value = value.value
        out[key] = value
    return out


def resolve_model_config(config: str, overrides: dict[str, Any] | None = None):
    """``config`` is a preset name (tiny/small/base), a config JSON file or a checkpoint directory; ``overrides``
    set fields (an :class:`IfOff` value only where that config has the field off)."""
    from ..modeling import MMSAConfig

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if config in PRESET_IMAGE_SIZE:
        return MMSAConfig.from_preset(config, **_applicable(overrides, MMSAConfig.from_preset(config)))
    path = Path(config)
    if path.is_dir() or path.suffix == ".json":
        cfg = MMSAConfig.from_pretrained(str(path)) if path.is_dir() else MMSAConfig.from_json_file(str(path))
        for key, value in _applicable(overrides, cfg).items():
            setattr(cfg, key, value)
        return cfg
    raise ValueError(
        f"--config {config!r}: expected one of {sorted(PRESET_IMAGE_SIZE)}, a config .json file or a checkpoint directory"
    )


def build_processor(image_size: int = 224, views: Any = None, **feature_settings: Any):
    """A default :class:`MMSAProcessor` with the given depiction size, computing ``views`` (default: all;
    e.g. ``views_for_config(config)``)."""
    from ..processing import MMSAFeatureExtractor, MMSAImageProcessor, MMSAProcessor

    return MMSAProcessor(
        feature_extractor=MMSAFeatureExtractor(**feature_settings),
        image_processor=MMSAImageProcessor(image_size=image_size),
        views=views,
    )


#: what :func:`views_for_config` reads for each kind of model
MODEL_READS = ("property", "backbone")


def views_for_config(config, model: str = "property") -> tuple[str, ...]:
    """The processor views a model built from ``config`` reads: ``"graph"`` always, then ``"image"`` /
    ``"geometry"`` when the model reads them.

    ``model="property"`` (fine-tuning, ``mmsa predict``): ``config.downstream_modalities``, e.g. ``("graph",)``
    for the GraphMVP protocol. ``model="backbone"`` (pretraining, ablations, ``MMSAModel`` / ``mmsa embed``):
    every enabled view (``use_image``, ``use_geometry``).
    """
    if model not in MODEL_READS:
        raise ValueError(f"views_for_config: model={model!r}; use one of {MODEL_READS}")
    enabled = list(config.enabled_modalities)
    read = enabled if model == "backbone" else list(config.downstream_modalities or enabled)
    return tuple(view for view in ("graph", "image", "geometry") if view == "graph" or view in read)


def environment_info() -> dict[str, Any]:
    """Versions and hardware, stored with every run."""
    import accelerate
    import datasets
    import rdkit
    import torch_geometric
    import transformers

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
        "torch_geometric": torch_geometric.__version__,
        "rdkit": rdkit.__version__,
        "cuda": torch.cuda.is_available(),
        "num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write ``payload`` as indented JSON (dataclasses are converted), atomically: a temporary file renamed
    over ``path`` once complete, so an error or a kill never leaves a half-written file or loses the earlier one
    (:mod:`mmsa_hf.atomic`)."""
    if is_dataclass(payload):
        payload = asdict(payload)
    text = json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n"  # fails before any write
    with atomic_open(path, "w") as handle:
        handle.write(text)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (Path,)):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class JsonlLog:
    """Append-only metrics log (one JSON object a line), truncatable on resume."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """Drop the records of steps after ``step`` (used when resuming from a checkpoint)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        with atomic_open(self.path, "w") as handle:
            for record in kept:
                handle.write(json.dumps(record) + "\n")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, default=_json_default) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path) as handle:
            return [json.loads(line) for line in handle if line.strip()]


def plot_curves(
    records: Iterable[dict[str, Any]],
    keys: list[str],
    path: str | os.PathLike,
    title: str,
    x_key: str = "step",
    smooth: int = 1,
) -> None:
    """Plot ``keys`` against ``x_key`` into a PNG (one panel per key)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    keys = [k for k in keys if any(k in r and r[k] is not None for r in records)]
    if not keys:
        return
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        xs = [r[x_key] for r in records if r.get(key) is not None]
        ys = [r[key] for r in records if r.get(key) is not None]
        ax.plot(xs, ys, alpha=0.35 if smooth > 1 else 1.0, lw=1)
        if smooth > 1 and len(ys) >= smooth:
            kernel = torch.ones(smooth) / smooth
            smoothed = torch.nn.functional.conv1d(
                torch.tensor(ys, dtype=torch.float32)[None, None], kernel[None, None]
            )[0, 0].tolist()
            ax.plot(xs[smooth - 1 :], smoothed, lw=1.6)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel(x_key)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    """``fig.savefig(path)`` atomically (temporary file, then rename; the format comes from ``path``'s suffix)."""
    path = Path(path)
    with atomic_path(path) as temp:
        fig.savefig(temp, dpi=dpi, format=path.suffix.lstrip(".").lower() or "png")


class Timer:
    """Wall-clock stopwatch."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def latest_checkpoint(project_dir: str | os.PathLike) -> Path | None:
    """The newest ``checkpoints/checkpoint_<i>`` folder Accelerate wrote, or None."""
    root = Path(project_dir) / "checkpoints"
    if not root.is_dir():
        return None
    # Only complete checkpoints: the step-counter file is written after ``save_state`` returns,
    # so a folder a killed run left half-written is never picked.
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("checkpoint_")
             and (p / "mmsa_training_state.json").is_file()]
    if not found:
        return None
    return max(found, key=lambda p: int(p.name.rsplit("_", 1)[-1]))


# ---------------------------------------------------------------------------------------------- CPU threads


def available_cores() -> int:
    """CPUs this process may use: its affinity mask (``taskset``, cpusets), capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _positive_int_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def thread_policy(num_processes: int | None = None, dataloader_workers: int = 0) -> dict[str, Any]:
    """The torch intra-op thread count of one training process, and the ``datasets`` workers it may start.

    ``OMP_NUM_THREADS``, when set, is obeyed as it is. Otherwise the process takes its share of the cores,
    ``available_cores() // processes`` (the processes of this job on this machine: ``LOCAL_WORLD_SIZE`` as set by
    ``accelerate launch`` / ``torchrun``, else ``num_processes``, else 1), minus one core per DataLoader worker,
    at least 1. Featurisation (``datasets.map``) may use ``num_proc`` up to the job's share,
    ``threads * num_processes``, so that a job confined to one core does not fork onto the others.
    """
    processes = max(1, _positive_int_env("LOCAL_WORLD_SIZE") or num_processes or 1)
    cores = available_cores()
    from_env = _positive_int_env("OMP_NUM_THREADS")
    if from_env is not None:
        threads, source = from_env, "OMP_NUM_THREADS"
    else:
        threads, source = max(1, cores // processes - max(0, dataloader_workers)), "cores // processes"
    return {"threads": threads, "source": source, "available_cores": cores, "processes": processes,
            "max_num_proc": max(1, threads * processes)}


def apply_thread_policy(num_processes: int | None = None, dataloader_workers: int = 0) -> dict[str, Any]:
    """Set ``torch.set_num_threads`` from :func:`thread_policy` (logged); returns the policy."""
    policy = thread_policy(num_processes, dataloader_workers)
    torch.set_num_threads(policy["threads"])
    logger.info(
        "torch intra-op threads: %d (%s; %d cores available, %d process(es) on this machine)",
        policy["threads"], policy["source"], policy["available_cores"], policy["processes"],
    )
    return policy


def capped_num_proc(requested: int | None, policy: dict[str, Any]) -> int:
    """``requested`` ``datasets`` workers, at most the job's share of the cores (``policy["max_num_proc"]``)."""
    requested = max(1, requested or 1)
    allowed = min(requested, policy["max_num_proc"])
    if allowed < requested:
        logger.warning("num_proc %d -> %d: this job's share of the cores is %d (see the thread policy)",
                       requested, allowed, policy["max_num_proc"])
    return allowed


# ---------------------------------------------------------------------------------------------- bf16 on CPU


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively (AVX512-BF16 or AMX); elsewhere they are emulated."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_mixed_precision(requested: str, on_cpu: bool) -> str:
    """``requested`` unless it is ``"bf16"`` on a CPU without native bf16: then ``"no"``, with a warning that
    says why (emulated bf16 is slower than fp32 there)."""
    if requested != "bf16" or not on_cpu or cpu_supports_bf16():
        return requested
    logger.warning(
        "--mixed_precision bf16: this CPU has neither AVX512-BF16 nor AMX, so bf16 would be emulated and slower "
        "than fp32; training in fp32 instead (--mixed_precision no). bf16 on CPU needs e.g. Intel Cooper Lake / "
        "Sapphire Rapids or AMD Zen 4 or newer."
    )
    return "no"


# ------------------------------------------------------------------------------------------------ command lines
def argument_help(text: str, **extra) -> dict[str, Any]:
    """``field(metadata=...)`` for ``HfArgumentParser``: the help text and any ``add_argument`` keyword."""
    return {"help": text, **extra}


def dataclass_parser(arguments_class, prog: str, description: str, epilog: str, add_help: bool = True):
    """``HfArgumentParser`` over ``arguments_class`` (each ``--a_flag`` also accepted as ``--a-flag``)."""
    import argparse

    from transformers import HfArgumentParser

    return HfArgumentParser(arguments_class, prog=prog, add_help=add_help, epilog=epilog, description=description,
                            formatter_class=argparse.RawDescriptionHelpFormatter)


def arguments_from_namespace(arguments_class, namespace):
    """``arguments_class`` from a parsed namespace (extra keys, such as the CLI's ``command``, ignored); its
    ``__post_init__`` raises ``ValueError`` on a bad combination."""
    from dataclasses import fields

    names = {f.name for f in fields(arguments_class)}
    return arguments_class(**{k: v for k, v in vars(namespace).items() if k in names})


def parse_arguments(parser, arguments_class, argv):
    """Parse ``argv`` into ``arguments_class``; a bad value or combination is a usage error (exit 2)."""
    try:
        return arguments_from_namespace(arguments_class, parser.parse_args(argv))
    except ValueError as err:
        parser.error(str(err))
