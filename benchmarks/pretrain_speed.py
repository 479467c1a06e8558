"""Pretraining speed per preset, today's configuration against the new one in the same run, and a quality proxy.

**Speed.** For each preset, three variants are built side by side and timed on the same batches of real molecules
(the default corpus, featurised once and cached), alternating variant by variant within every round so that a
shared machine slows them alike:

- ``today``: the preset's geometry settings before issue 10 (``TODAY``), fp32, the image batch in NCHW, torch's
  default (for-each) AdamW;
- ``new_fp32``: the preset as it is now (``PRESETS``), fp32, channels-last image batch, fused AdamW (as
  ``scripts/pretrain.py`` builds it since 2026-12-03), the ResNet stem pooled before its ReLU
  (``MMSAPoolFirstResNetStem``, the same maths; ``today`` has transformers' order), in a process that keeps freed
  memory (``mmsa_hf.training.malloc``, as ``scripts/pretrain.py`` does since 2026-12-04; ``today`` runs in its own
  process under glibc's defaults, and the two processes take turns), the 3D encoder's message passing through
  ``torch.compile`` (as ``scripts/pretrain.py`` does on a CPU; ``--no_compile_geometry`` keeps it eager; it compiles
  in the warm-up round);
- ``new``: as ``new_fp32`` plus bf16 autocast (on a CPU with native bf16; otherwise ``new`` = ``new_fp32``).

Timed per batch: the whole training step (forward, backward, AdamW step) and, separately, forward + backward
of each encoder alone (2D GIN, image ResNet, 3D encoder); the collation (PNG decoding) once per batch.

**Quality proxy** (``--proxy_steps``): ``today`` and ``new`` each pretrain ``small`` for the same number of steps
on the same molecules in the same order, then embed 256 held-out molecules; graph->image and graph->3D top-1
retrieval among the 256 (projected view embeddings, cosine) says whether the views still line up as well.

    OMP_NUM_THREADS=1 HF_DATASETS_CACHE=~/.cache/mmsa/datasets python benchmarks/pretrain_speed.py
    python benchmarks/pretrain_speed.py --presets small --rounds 5 --proxy_steps 0   # speed only
    python benchmarks/pretrain_speed.py --presets small --new_image_size 96 --results_name pretrain_speed_image96

``--new_image_size`` depicts the same molecules at another size for the two new variants (today's keeps 128 px),
so a smaller depiction is timed and proxied against today's in the same run; ``--new_overrides`` does the same for
config fields (``--new_overrides '{"geometry_shared_filter_network": true}'``).

writes ``benchmarks/results/pretrain_speed.json`` and ``pretrain_speed.md`` (a section not re-run is kept).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from mmsa_hf.atomic import write_text_atomic  # noqa: E402 - results are never half-written

#: the geometry settings (and the stem kernel) each preset had before issue 10 ("today's configuration")
TODAY = {
    "small": {"geometry_num_filters": 128, "geometry_cutoff": 10.0, "geometry_shared_filter_network": False,
              "image_stem_kernel_size": 7},
    "base": {"geometry_num_filters": 256, "geometry_cutoff": 10.0, "geometry_shared_filter_network": False},
}
#: the depiction size each preset had before issue 10 (``--new_image_size`` measures another one for ``new``)
TODAY_IMAGE_SIZE = {"tiny": 64, "small": 128, "base": 224}
TARGET_MOLECULES_PER_S = 250.0  # small preset, one thread
ISSUE_TODAY_STEP_MS = (548, 650)  # today's small step (batch 64, one thread) as measured in issue 10
PARTS = ("step", "graph", "image", "geometry")


def load_molecules(num_train: int, num_held_out: int, preset: str = "small", seed: int = 0,
                   image_size: int | None = None):
    """``num_train`` + ``num_held_out`` featurised molecules of the default corpus (a seeded sample, cached).

    The sample is ``corpus.shuffle(seed).select(range(num_train + num_held_out))``; after featurisation (molecules
    RDKit cannot embed are skipped) the last ``num_held_out`` rows are held out. ``num_proc=1``. Depictions are
    ``image_size`` pixels (default: the preset's).
    """
    from mmsa_hf.data import featurize_dataset, load_pretraining_corpus
    from mmsa_hf.training.common import PRESET_IMAGE_SIZE, build_processor

    processor = build_processor(image_size=image_size or PRESET_IMAGE_SIZE[preset])
    corpus = load_pretraining_corpus("moleculenet", exclude_test=True, num_proc=1)
    sample = corpus.shuffle(seed=seed).select(range(num_train + num_held_out))
    featurized = featurize_dataset(sample, processor, num_proc=1, on_error="skip")
    n = len(featurized)
    held_out = featurized.select(range(n - num_held_out, n)) if num_held_out else None
    return processor, featurized.select(range(n - num_held_out)), held_out


# ------------------------------------------------------------------------------------------------ variants


def variant_specs(preset: str, bf16: bool, new_image_size: int | None = None,
                  new_overrides: dict[str, Any] | None = None, keep_freed_memory: bool = True,
                  compile_geometry: bool = True) -> list[dict[str, Any]]:
    """``today`` / ``new_fp32`` / ``new`` (see the module docstring); ``new_image_size`` (default: the preset's
    depiction size now) is the image size of the two new variants, and ``new_overrides`` (config fields, default
    none) are applied to the two new variants only, so a candidate preset change is timed against today's.
    ``keep_freed_memory``: the new variants' process keeps freed memory (``mmsa_hf.training.malloc``).
    ``compile_geometry``: the new variants' 3D encoder runs its message passing through ``torch.compile``, as
    ``scripts/pretrain.py`` does on a CPU (``--compile_geometry``)."""
    from mmsa_hf.training.common import PRESET_IMAGE_SIZE

    new_size = new_image_size or PRESET_IMAGE_SIZE[preset]
    new = dict(new_overrides or {})
    return [
        {"name": "today", "overrides": dict(TODAY[preset]), "bf16": False, "channels_last": False, "fused": False,
         "image_size": TODAY_IMAGE_SIZE[preset], "keep_freed_memory": False, "pool_first_stem": False,
         "compile_geometry": False},
        {"name": "new_fp32", "overrides": dict(new), "bf16": False, "channels_last": True, "fused": True,
         "image_size": new_size, "keep_freed_memory": keep_freed_memory, "pool_first_stem": True,
         "compile_geometry": compile_geometry},
        {"name": "new", "overrides": dict(new), "bf16": bf16, "channels_last": True, "fused": True,
         "image_size": new_size, "keep_freed_memory": keep_freed_memory, "pool_first_stem": True,
         "compile_geometry": compile_geometry},
    ]


def preset_variant_specs(preset: str, args: argparse.Namespace, bf16: bool) -> list[dict[str, Any]]:
    """``variant_specs`` of ``preset``; for ``small`` with the command line's ``--new_image_size`` and
    ``--new_overrides`` (the other presets are timed as they are)."""
    keep, compiled = args.keep_freed_memory, args.compile_geometry
    if preset != "small":
        return variant_specs(preset, bf16, keep_freed_memory=keep, compile_geometry=compiled)
    return variant_specs("small", bf16, args.new_image_size, args.new_overrides, keep_freed_memory=keep,
                         compile_geometry=compiled)


def build_variant(preset: str, spec: dict[str, Any], seed: int = 0, lr: float = 1e-3) -> dict[str, Any]:
    """Model (train mode), AdamW optimizer and autocast context of one variant."""
    from mmsa_hf.modeling import MMSAConfig, MMSAForPreTraining
    from mmsa_hf.training.pretrain import compile_geometry_for_run

    torch.manual_seed(seed)
    config = MMSAConfig.from_preset(preset, **spec["overrides"])
    model = MMSAForPreTraining(config).train()
    if model.mmsa.image_encoder is not None:
        layout = torch.channels_last if spec["channels_last"] else torch.contiguous_format
        model.mmsa.image_encoder.memory_format = layout
        if not spec.get("pool_first_stem", True):
            resnet_own_stem(model.mmsa.image_encoder)
    compile_geometry_for_run(model, spec.get("compile_geometry", False), torch.device("cpu"))  # as pretraining
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-5, fused=spec["fused"])
    return {**spec, "config": config, "model": model, "optimizer": optimizer}


def resnet_own_stem(encoder) -> None:
    """Put transformers' ``ResNetEmbeddings`` (ReLU before the max pool) back in place of the pool-first stem, with
    the same sub-modules: today's image encoder, for the speed baseline."""
    from transformers.models.resnet.modeling_resnet import ResNetEmbeddings

    from mmsa_hf.modeling.encoder_image import MMSAPoolFirstResNetStem

    stem = encoder.resnet.embedder
    if isinstance(stem, MMSAPoolFirstResNetStem):
        own = ResNetEmbeddings(encoder.resnet.config)
        own.embedder, own.pooler = stem.embedder, stem.pooler  # the initialised weights, under the same names
        encoder.resnet.embedder = own


def autocast(variant: dict[str, Any]):
    if variant["bf16"]:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def geometry_settings(config) -> dict[str, Any]:
    keys = ("geometry_num_layers", "geometry_hidden_size", "geometry_num_filters", "geometry_num_rbf",
            "geometry_cutoff", "geometry_shared_filter_network")
    return {k: getattr(config, k) for k in keys}


# ------------------------------------------------------------------------------------------------ timing


def train_step(variant: dict[str, Any], batch: dict[str, Any]) -> torch.Tensor:
    """Forward, backward and AdamW step of the whole pretraining model; returns the loss."""
    model, optimizer = variant["model"], variant["optimizer"]
    with autocast(variant):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def encoder_step(variant: dict[str, Any], part: str, batch: dict[str, Any]) -> None:
    """Forward + backward of one encoder alone on ``batch`` (gradients discarded)."""
    mmsa = variant["model"].mmsa
    n = batch["ptr"].numel() - 1
    with autocast(variant):
        if part == "graph":
            out = mmsa.graph_encoder(batch["atom_features"], batch["bond_features"], batch["edge_index"],
                                     batch["batch"], ptr=batch["ptr"], num_graphs=n)
        elif part == "image":
            out = mmsa.image_encoder(batch["pixel_values"])
        else:
            out = mmsa.geometry_encoder(batch["atomic_numbers"], batch["pos"], batch["batch"], ptr=batch["ptr"],
                                        atom_features=batch["atom_features"], num_graphs=n)
        loss = out.molecule_embedding.float().square().mean()
    loss.backward()
    variant["model"].zero_grad(set_to_none=True)


def timed(fn, *args) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``fn(*args)``. With one thread the CPU time leaves out the waits for a core
    that the wall time counts on a busy machine (other jobs still slow it through shared caches and cores)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def time_round(variant: dict[str, Any], batches: list[dict[str, Any]]) -> dict[str, list]:
    """(wall, CPU) seconds per batch of the whole step and of each encoder, for one variant over ``batches``; and
    the minor page faults of each whole step (``step_page_faults``)."""
    out: dict[str, list] = {part: [] for part in PARTS}
    out["step_page_faults"] = []
    for batch in batches:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        out["step"].append(timed(train_step, variant, batch))
        out["step_page_faults"].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
        for part in PARTS[1:]:
            out[part].append(timed(encoder_step, variant, part, batch))
    return out


def collate_batches(collator, dataset, batch_size: int, count: int, offset: int = 0) -> tuple[list, list]:
    """``count`` collated batches (from row ``offset``) and the (wall, CPU) seconds each collation took."""
    batches, seconds = [], []
    for i in range(count):
        start = offset + i * batch_size
        rows = [dataset[j % len(dataset)] for j in range(start, start + batch_size)]  # wraps if RDKit skipped some
        wall, cpu = time.perf_counter(), time.process_time()
        batch = collator(rows)
        seconds.append((time.perf_counter() - wall, time.process_time() - cpu))
        batch.pop("row_index", None)
        batches.append(batch)
    return batches, seconds


def summarize(times: dict[str, list[tuple[float, float]]], batch_size: int) -> dict[str, Any]:
    """Median wall / CPU milliseconds and molecules/s of every part."""
    out = {}
    for part, samples in times.items():
        wall = statistics.median(w for w, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        out[part] = {"median_ms": round(1000 * wall, 1), "molecules_per_s": round(batch_size / wall, 1),
                     "cpu_median_ms": round(1000 * cpu, 1), "molecules_per_cpu_s": round(batch_size / cpu, 1),
                     "samples": len(samples)}
    return out


def speed_preset(preset: str, args) -> dict[str, Any]:
    """All variants of one preset on the same molecules, alternating within every round.

    Variants that keep freed memory (``mmsa_hf.training.malloc``, a process-wide setting) run in one worker
    process and the others (``today``) in another, so glibc's defaults are measured where they apply. The workers
    take turns (one computes while the other waits), round by round, as the variants of one process did before.
    """
    import multiprocessing

    batch_size = args.batch_size if preset == "small" else args.base_batch_size
    bf16 = cpu_bf16_ok()
    specs = preset_variant_specs(preset, args, bf16)
    groups = [[s for s in specs if s["keep_freed_memory"] == keep] for keep in (False, True)]
    context = multiprocessing.get_context("spawn")
    workers = []
    for group in filter(None, groups):
        parent_end, child_end = context.Pipe()
        process = context.Process(target=variant_worker, args=(child_end, preset, group, vars(args)), daemon=True)
        process.start()
        workers.append((process, parent_end))
    times = {s["name"]: {part: [] for part in PARTS + ("step_page_faults",)} for s in specs}
    collate_s = {s["name"]: [] for s in specs}
    steps = args.steps_per_round if preset == "small" else args.base_steps_per_round
    try:
        for round_index in range(-1, args.rounds):  # round -1: warm-up (first-call allocations, oneDNN primitives)
            count, offset = (1, 0) if round_index < 0 else (steps, (1 + round_index * steps) * batch_size)
            for _, connection in workers:  # one at a time: the other worker waits
                connection.send((count, offset))
                reply = connection.recv()
                if round_index >= 0:
                    _merge_round(reply, times, collate_s)
            if round_index >= 0:
                print(f"[{preset}] round {round_index + 1}/{args.rounds}: " + ", ".join(
                    f"{n} {1000 * statistics.median(w for w, _ in t['step']):.0f} ms" for n, t in times.items()),
                    flush=True)
    finally:
        for process, connection in workers:
            connection.send(None)
            process.join(timeout=60)
    return report_preset(preset, specs, times, collate_s, batch_size, bf16)


def _merge_round(reply: dict[str, Any], times: dict[str, dict], collate_s: dict[str, list]) -> None:
    if "error" in reply:
        raise RuntimeError(f"speed worker failed:\n{reply['error']}")
    for name, parts in reply["times"].items():
        for part, values in parts.items():
            times[name][part].extend(values)
        collate_s[name].extend(reply["collate"][name])


def variant_worker(connection, preset: str, specs: list[dict[str, Any]], arg_values: dict[str, Any]) -> None:
    """One process of :func:`speed_preset`: builds ``specs``' variants, then times a round per request
    ``(count, offset)`` (collating ``count`` batches from row ``offset``) until it receives ``None``."""
    import traceback

    from mmsa_hf.data import MMSACollator
    from mmsa_hf.training.malloc import keep_freed_memory_in_process

    try:
        args = argparse.Namespace(**arg_values)
        if specs[0]["keep_freed_memory"]:
            keep_freed_memory_in_process()
        if args.threads:
            torch.set_num_threads(args.threads)
        samples = speed_molecules(preset, args, sizes={s["image_size"] for s in specs})
        variants = [build_variant(preset, spec) for spec in specs]
        collators = {size: MMSACollator(processor) for size, (processor, _, _) in samples.items()}
        batch_size = args.batch_size if preset == "small" else args.base_batch_size
    except Exception:  # noqa: BLE001 - reported to the parent, which raises
        connection.recv()
        connection.send({"error": traceback.format_exc()})
        return
    while (request := connection.recv()) is not None:
        count, offset = request
        batches, seconds = {}, {}
        for size, collator in collators.items():
            batches[size], seconds[size] = collate_batches(collator, samples[size][1], batch_size, count, offset)
        connection.send({"times": {v["name"]: time_round(v, batches[v["image_size"]]) for v in variants},
                         "collate": {v["name"]: seconds[v["image_size"]] for v in variants}})


def report_preset(preset, specs, times, collate_s, batch_size, bf16) -> dict[str, Any]:
    """Per variant: medians of every part, plus the step with the collation of its own process and image size."""
    from mmsa_hf.modeling import MMSAConfig

    collation = {name: summarize({"collate": seconds}, batch_size)["collate"] for name, seconds in collate_s.items()}
    today_collate = collation[specs[0]["name"]]
    result = {"batch_size": batch_size, "image_size": specs[0]["image_size"], "bf16_autocast_in_new": bf16,
              "collate_median_ms": today_collate["median_ms"], "collate_cpu_median_ms": today_collate["cpu_median_ms"],
              "variants": {}}
    for spec in specs:
        collate = collation[spec["name"]]
        faults = times[spec["name"]].pop("step_page_faults")
        parts = summarize(times[spec["name"]], batch_size)
        wall = parts["step"]["median_ms"] + collate["median_ms"]
        cpu = parts["step"]["cpu_median_ms"] + collate["cpu_median_ms"]
        parts["step_plus_collate"] = {"median_ms": round(wall, 1),
                                      "molecules_per_s": round(1000 * batch_size / wall, 1),
                                      "cpu_median_ms": round(cpu, 1),
                                      "molecules_per_cpu_s": round(1000 * batch_size / cpu, 1)}
        config = MMSAConfig.from_preset(preset, **spec["overrides"])
        result["variants"][spec["name"]] = {
            "geometry": geometry_settings(config), "bf16": spec["bf16"],
            "channels_last": spec["channels_last"], "fused_adamw": spec["fused"],
            "keep_freed_memory": spec["keep_freed_memory"], "pool_first_stem": spec["pool_first_stem"],
            "compile_geometry": spec["compile_geometry"],
            "step_page_faults_median": statistics.median(faults) if faults else None,
            "image_size": spec["image_size"], "collate_cpu_median_ms": collate["cpu_median_ms"], "parts": parts}
    v = {name: result["variants"][name]["parts"] for name in ("today", "new_fp32", "new")}
    for key, label in (("median_ms", "wall"), ("cpu_median_ms", "cpu")):
        result[f"speedup_new_vs_today_{label}"] = {
            p: round(v["today"][p][key] / v["new"][p][key], 2) for p in PARTS + ("step_plus_collate",)}
        result[f"bf16_gain_step_{label}"] = round(v["new_fp32"]["step"][key] / v["new"]["step"][key], 2)
    return result


def cpu_bf16_ok() -> bool:
    from mmsa_hf.training.common import cpu_supports_bf16

    return cpu_supports_bf16()


# ------------------------------------------------------------------------------------------------ quality proxy


def proxy_train(preset: str, spec: dict[str, Any], train, processor, steps: int, batch_size: int, seed: int):
    """Pretrain one variant for ``steps`` steps (cosine schedule, 5% warm-up) in a seeded data order."""
    from transformers import get_cosine_schedule_with_warmup

    from mmsa_hf.data import MMSACollator

    variant = build_variant(preset, spec, seed=seed)
    scheduler = get_cosine_schedule_with_warmup(variant["optimizer"], int(0.05 * steps), steps)
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True,
                                         collate_fn=MMSACollator(processor),
                                         generator=torch.Generator().manual_seed(seed))
    done, seen, losses, start = 0, 0, [], time.perf_counter()
    while done < steps:
        for batch in loader:
            batch.pop("row_index", None)
            losses.append(float(train_step(variant, batch)))
            scheduler.step()
            done, seen = done + 1, seen + int(batch["valid_mask"].sum())
            if done == steps:
                break
    seconds = time.perf_counter() - start
    return variant, {"steps": steps, "molecules_seen": seen, "train_seconds": round(seconds, 1),
                     "molecules_per_s": round(seen / seconds, 1), "final_loss_mean_last_20": round(
                         statistics.fmean(losses[-20:]), 4)}


@torch.no_grad()
def held_out_embeddings(model, held_out, processor) -> dict[str, torch.Tensor]:
    """Projected graph / image / 3D embeddings (eval mode, fp32) of the held-out molecules."""
    from mmsa_hf.data import MMSACollator

    model.eval()
    collator, views = MMSACollator(processor), {"graph": [], "image": [], "geometry": []}
    for start in range(0, len(held_out), 64):
        batch = collator([held_out[i] for i in range(start, min(start + 64, len(held_out)))])
        batch.pop("row_index", None)
        out = model.mmsa(**batch)
        for view in views:
            views[view].append(getattr(out, f"{view}_embedding").float())
    model.train()
    return {view: torch.cat(chunks) for view, chunks in views.items()}


def retrieval(query: torch.Tensor, keys: torch.Tensor) -> dict[str, float]:
    """Top-1 / top-5 accuracy and mean reciprocal rank of finding molecule ``i``'s key for query ``i`` (cosine)."""
    similarity = torch.nn.functional.normalize(query, dim=-1) @ torch.nn.functional.normalize(keys, dim=-1).t()
    correct = similarity.diagonal().unsqueeze(1)
    rank = (similarity > correct).sum(dim=1) + 1  # 1 = best
    return {"top1": round(float((rank == 1).float().mean()), 4), "top5": round(float((rank <= 5).float().mean()), 4),
            "mrr": round(float((1.0 / rank).mean()), 4)}


def run_proxy(samples: dict[int, tuple], args) -> dict[str, Any]:
    """``today`` vs ``new`` (small preset): same steps, same molecules, same order; retrieval on held-out.
    ``samples``: image size -> (processor, train rows, held-out rows) of the same molecules."""
    specs = [s for s in preset_variant_specs("small", args, cpu_bf16_ok()) if s["name"] != "new_fp32"]
    _, train, held_out = samples[specs[0]["image_size"]]
    out = {"preset": "small", "steps": args.proxy_steps, "batch_size": args.batch_size, "train_molecules": len(train),
           "held_out_molecules": len(held_out), "seeds": args.proxy_seeds, "runs": {},
           "image_sizes": {spec["name"]: spec["image_size"] for spec in specs},
           "new_overrides": args.new_overrides or {}}
    for spec in specs:
        processor, train, held_out = samples[spec["image_size"]]
        for seed in args.proxy_seeds:
            variant, training = proxy_train("small", spec, train, processor, args.proxy_steps, args.batch_size, seed)
            views = held_out_embeddings(variant["model"], held_out, processor)
            record = {"training": training, "graph_to_image": retrieval(views["graph"], views["image"]),
                      "graph_to_geometry": retrieval(views["graph"], views["geometry"]),
                      "geometry": geometry_settings(variant["config"]), "bf16": spec["bf16"]}
            out["runs"].setdefault(spec["name"], []).append(record)
            print(f"[proxy] {spec['name']} seed {seed}: {json.dumps(record)}", flush=True)
    return with_means(out)


def with_means(proxy: dict[str, Any]) -> dict[str, Any]:
    """``proxy["mean"]``: retrieval averaged over the seeds of every variant."""
    def mean(runs, task):
        return {k: round(statistics.fmean(r[task][k] for r in runs), 4) for k in ("top1", "top5", "mrr")}

    tasks = ("graph_to_image", "graph_to_geometry")
    proxy["mean"] = {name: {task: mean(runs, task) for task in tasks} for name, runs in proxy["runs"].items()}
    return proxy


def merge_proxy(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Add the seeds of ``new`` to ``old`` when both ran the same protocol (steps, batch, molecules); else ``new``."""
    keys = ("steps", "batch_size", "train_molecules", "held_out_molecules", "image_sizes", "new_overrides")
    absent = {"new_overrides": {}}  # files written before --new_overrides existed ran with none
    if not old or any(old.get(k, absent.get(k)) != new[k] for k in keys):
        return new
    kept = [s for s in old["seeds"] if s not in new["seeds"]]
    for name, runs in new["runs"].items():
        old_runs = [r for s, r in zip(old["seeds"], old["runs"].get(name, [])) if s in kept]
        new["runs"][name] = old_runs + runs
    new["seeds"] = kept + new["seeds"]
    return with_means(new)


# ------------------------------------------------------------------------------------------------ report


def environment_line(env: dict[str, Any]) -> str:
    return (f"Measured {env.get('measured_at')}: torch {env.get('torch')}, {env.get('torch_num_threads')} thread(s) "
            f"(OMP_NUM_THREADS={env.get('OMP_NUM_THREADS')}), {env.get('available_cores')} cores available, native "
            f"bf16: {env.get('cpu_bf16_native')}, load average {env.get('load_average')}.")


def environment() -> dict[str, Any]:
    from mmsa_hf.training.common import available_cores

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torch_num_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "available_cores": available_cores(),
            "cpu_bf16_native": cpu_bf16_ok(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}


def _part_rows(r: dict[str, Any], names: list[str], clock: str) -> list[str]:
    ms_key, rate_key = ("cpu_median_ms", "molecules_per_cpu_s") if clock == "cpu" else ("median_ms", "molecules_per_s")
    lines = ["| part | " + " | ".join(f"{n} ms | {n} mol/s" for n in names) + " | new / today |",
             "|---|" + "---:|---:|" * len(names) + "---:|"]
    for part in PARTS + ("step_plus_collate",):
        cells = []
        for name in names:
            p = r["variants"][name]["parts"][part]
            cells += [f"{p[ms_key]}", f"{p[rate_key]}"]
        lines.append(f"| {part} | " + " | ".join(cells) + f" | {r[f'speedup_new_vs_today_{clock}'][part]}x |")
    return lines


def speed_table(preset: str, r: dict[str, Any]) -> list[str]:
    names = list(r["variants"])
    sizes = {v.get("image_size", r["image_size"]) for v in r["variants"].values()}
    same = (f"{r['image_size']} px; collation {r['collate_cpu_median_ms']} ms CPU / {r['collate_median_ms']} ms wall a "
            "batch, the same for every variant" if len(sizes) == 1 else "image size and collation per variant below")
    lines = [f"### `{preset}` (batch {r['batch_size']}, {same})", "",
             environment_line(r.get("environment", {})), "",
             "CPU time of the process (one thread: leaves out the waits for a core, not the slowdown from the other "
             "jobs sharing caches and cores):", ""]
    lines += _part_rows(r, names, "cpu") + ["", "Wall-clock time (includes waiting for a core on the shared box):", ""]
    lines += _part_rows(r, names, "wall")
    lines += ["", "| variant | geometry filters | cutoff (Å) | shared filter net | image px | collation CPU ms "
              "| image memory format | bf16 | pool-first stem | keeps freed memory | compiled 3D | page faults / step |",
              "|---|---:|---:|---|---:|---:|---|---|---|---|---|---:|"]
    for name in names:
        v = r["variants"][name]
        g = v["geometry"]
        lines.append(f"| {name} | {g['geometry_num_filters']} | {g['geometry_cutoff']} | "
                     f"{g['geometry_shared_filter_network']} | {v.get('image_size', r['image_size'])} | "
                     f"{v.get('collate_cpu_median_ms', r['collate_cpu_median_ms'])} | "
                     f"{'channels_last' if v['channels_last'] else 'NCHW'} | "
                     f"{v['bf16']} | {v.get('pool_first_stem', 'n/a')} | {v.get('keep_freed_memory', 'n/a')} | "
                     f"{v.get('compile_geometry', 'n/a')} | {v.get('step_page_faults_median', 'n/a')} |")
    lines += ["", bf16_line(r), ""]
    return lines


def bf16_line(r: dict[str, Any]) -> str:
    """The bf16 gain, or, on a CPU without native bf16 (where ``new`` runs in fp32 like ``new_fp32``), the gap
    between two identical configurations, which is the run's own noise."""
    ratio = f"{r['bf16_gain_step_cpu']}x CPU time, {r['bf16_gain_step_wall']}x wall"
    if r.get("bf16_autocast_in_new", True):
        return f"bf16 autocast gain on the whole step (new_fp32 / new): {ratio}."
    return ("No bf16 here (this CPU has neither AVX512-BF16 nor AMX, so `new` runs in fp32 and is the same "
            f"configuration as `new_fp32`): new_fp32 / new = {ratio} is this run's noise between identical "
            "configurations, not a bf16 effect.")


def proxy_table(p: dict[str, Any]) -> list[str]:
    sizes = p.get("image_sizes") or {}
    lines = [f"## Quality proxy (`small`, image px {sizes or 'as the speed section'}, {p['steps']} steps of {p['batch_size']} on {p['train_molecules']} molecules, "
             f"seeds {p['seeds']}; retrieval among {p['held_out_molecules']} held-out molecules, chance 1/"
             f"{p['held_out_molecules']})", "", environment_line(p.get("environment", {})), "",
             "| variant | seed | train mol/s | molecules seen | loss (last 20) | graph->image top-1 | top-5 | MRR "
             "| graph->3D top-1 | top-5 | MRR |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, runs in p["runs"].items():
        for seed, r in zip(p["seeds"], runs):
            gi, gg, t = r["graph_to_image"], r["graph_to_geometry"], r["training"]
            lines.append(f"| {name} | {seed} | {t['molecules_per_s']} | {t['molecules_seen']} | "
                         f"{t['final_loss_mean_last_20']} | {gi['top1']} | {gi['top5']} | {gi['mrr']} | "
                         f"{gg['top1']} | {gg['top5']} | {gg['mrr']} |")
    for name, m in p["mean"].items():
        lines.append(f"| **{name} mean** | | | | | {m['graph_to_image']['top1']} | {m['graph_to_image']['top5']} | "
                     f"{m['graph_to_image']['mrr']} | {m['graph_to_geometry']['top1']} | "
                     f"{m['graph_to_geometry']['top5']} | {m['graph_to_geometry']['mrr']} |")
    if p.get("new_overrides"):
        lines += ["", f"`new` also sets {json.dumps(p['new_overrides'])} (`--new_overrides`)."]
    return lines + ["", *proxy_score_lines(p), "Both variants train with the same objective (the code of the working tree when measured), the "
                    "same initial seed and the same molecules in the same order; they differ only in the 3D settings, the "
                    "image memory format, bf16 autocast (`new`) and, where the header says so, the depiction size. Retrieval: projected view embeddings of the "
                    "eval-mode model "
                    "in fp32, cosine similarity, molecule i's graph embedding must rank its own image / 3D embedding "
                    "first among the 256. `train mol/s` is each run's own wall clock (the runs are sequential, not alternated, so "
                    "the machine's load differed).", ""]


def proxy_scores(p: dict[str, Any]) -> dict[str, list[float]]:
    """Per variant, per seed: the mean of the graph->image and graph->3D MRR (``speed_selection.md``'s score)."""
    return {name: [(r["graph_to_image"]["mrr"] + r["graph_to_geometry"]["mrr"]) / 2 for r in runs]
            for name, runs in p["runs"].items()}


def proxy_score_lines(p: dict[str, Any]) -> list[str]:
    """The quality score of each variant and the paired difference ``new - today`` over the seeds."""
    from mmsa_hf.training.metrics import paired_t_interval

    scores = proxy_scores(p)
    if set(scores) != {"today", "new"} or len(scores["new"]) != len(scores["today"]):
        return []
    d = paired_t_interval(scores["new"], scores["today"])
    interval = f"[{d['low']:+.4f}, {d['high']:+.4f}]" if d["n"] >= 2 else "(no interval: one seed)"
    return [f"Quality score (mean of graph->image and graph->3D MRR), mean over seeds: today "
            f"{statistics.fmean(scores['today']):.4f}, new {statistics.fmean(scores['new']):.4f}; paired difference "
            f"new − today **{d['mean']:+.4f}** {interval} over {d['n']} seeds.", ""]


def to_markdown(results: dict[str, Any]) -> str:
    lines = ["# Pretraining speed (issue 10)", "",
             "**The machine was shared** with other jobs (2 vCPUs; the load average at each measurement is given), so "
             "absolute numbers are noisy and slower than on an idle machine; the variants alternate within every round "
             "on the same batches, so their ratios are fair. One torch thread.", "",
             "Median per batch. `step` = forward + backward + AdamW step of `MMSAForPreTraining`; `graph` / `image` /"
             " `geometry` = forward + backward of that encoder alone; `step_plus_collate` adds the collation (PNG "
             "decoding); molecules/s = batch size / median time.", ""]
    for preset, r in results.get("speed", {}).items():
        lines += speed_table(preset, r)
    small = results.get("speed", {}).get("small")
    if small:
        parts = {name: small["variants"][name]["parts"]["step"] for name in ("today", "new")}
        got = parts["new"]["molecules_per_cpu_s"]
        lines += [f"Target: `small` >= {TARGET_MOLECULES_PER_S:.0f} molecules/s a step on one thread: **{got}** "
                  f"molecules per CPU-second ({'met' if got >= TARGET_MOLECULES_PER_S else 'missed'}; "
                  f"{parts['new']['molecules_per_s']} by the wall clock of the shared box); today's configuration in "
                  f"the same run: {parts['today']['molecules_per_cpu_s']} ({parts['today']['molecules_per_s']} wall).",
                  "", reference_line(small), ""]
    if results.get("proxy"):
        lines += proxy_table(results["proxy"])
    return "\n".join(lines)


def reference_line(small: dict[str, Any]) -> str:
    """The CPU-time ratio carried over to issue 10's quieter-machine measurement of today's step (548-650 ms)."""
    ratio = small["speedup_new_vs_today_cpu"]["step"]
    batch = small["batch_size"]
    return (f"Today's `small` step measured {ISSUE_TODAY_STEP_MS[0]}-{ISSUE_TODAY_STEP_MS[1]} ms in issue 10 on a "
            f"quieter machine; here it costs {small['variants']['today']['parts']['step']['cpu_median_ms']} ms of CPU, "
            "slowed by the other jobs on the machine (shared caches, possibly SMT siblings). Carried over, the "
            f"{ratio}x CPU-time ratio "
            f"gives {ISSUE_TODAY_STEP_MS[0] / ratio:.0f}-{ISSUE_TODAY_STEP_MS[1] / ratio:.0f} ms a step, "
            f"{1000 * batch * ratio / ISSUE_TODAY_STEP_MS[1]:.0f}-{1000 * batch * ratio / ISSUE_TODAY_STEP_MS[0]:.0f} "
            "molecules/s (an extrapolation, not a measurement).")


def speed_molecules(preset: str, args: argparse.Namespace, sizes: set[int] | None = None) -> dict[int, tuple]:
    """Image size -> (processor, train rows, held-out rows), one entry per depiction size the variants use (or
    ``sizes``). ``small``: the proxy's sample (one featurisation serves both); other presets featurise only the
    molecules their rounds need."""
    sizes = sizes or {spec["image_size"] for spec in preset_variant_specs(preset, args, False)}
    if preset == "small":
        return {size: load_molecules(args.train_molecules, args.held_out, preset, image_size=size) for size in sizes}
    needed = (1 + args.rounds * args.base_steps_per_round) * args.base_batch_size
    return {size: load_molecules(needed, 0, preset, image_size=size) for size in sizes}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="*", default=["small", "base"])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--base_batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps_per_round", type=int, default=3)
    parser.add_argument("--base_steps_per_round", type=int, default=1)
    parser.add_argument("--proxy_steps", type=int, default=300, help="0: skip the quality proxy")
    parser.add_argument("--proxy_seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train_molecules", type=int, default=4000)
    parser.add_argument("--held_out", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS or all)")
    parser.add_argument("--new_image_size", type=int, default=None,
                        help="small: depiction size of the new variants (default: the preset's; today's stays 128)")
    parser.add_argument("--new_overrides", type=json.loads, default=None, metavar="JSON",
                        help='small: config fields for the new variants only, e.g. '
                             '\'{"geometry_shared_filter_network": true}\' (default: the preset as it is)')
    parser.add_argument("--no_keep_freed_memory", dest="keep_freed_memory", action="store_false",
                        help="time the new variants under glibc's malloc defaults too (as today's)")
    parser.add_argument("--no_compile_geometry", dest="compile_geometry", action="store_false",
                        help="run the new variants' 3D message passing eagerly (as today's)")
    parser.add_argument("--results_name", default="pretrain_speed",
                        help="results file stem under benchmarks/results (another name keeps an experiment apart)")
    return parser.parse_args(argv)


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    for preset in args.presets:
        speed_molecules(preset, args)  # featurise (or find in the datasets cache) once, before the workers start
        result = speed_preset(preset, args)
        result["environment"] = environment()
        results = write_results(lambda r: r.setdefault("speed", {}).update({preset: result}), args.results_name)
    if args.proxy_steps:
        proxy = run_proxy(speed_molecules("small", args), args)
        proxy["environment"] = environment()
        results = write_results(lambda r: r.update(proxy=merge_proxy(r.get("proxy"), proxy)), args.results_name)
    print(to_markdown(results))
    return results


def write_results(update, name: str = "pretrain_speed") -> dict[str, Any]:
    """Apply ``update`` to the results file ``name`` as it is now (so runs of different sections can overlap) and
    rewrite the JSON and the Markdown."""
    path = RESULTS_DIR / f"{name}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    update(results)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(results, indent=2) + "\n")
    write_text_atomic(RESULTS_DIR / f"{name}.md", to_markdown(results))
    return results


if __name__ == "__main__":
    main()
