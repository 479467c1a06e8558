"""Fine-tuning throughput (training molecules per second) on the five benchmark sets, against chemprop's figure.

chemprop 2.3.1's committed figures (``../shared/data/baselines/results.json``, ``train_mol_per_s``) were measured
on 2 threads. The issue allows either of two equal-core comparisons, and this script measures both, on the graph-
only ``small`` property model at the benchmark protocol's batch size (32), from scratch (weights do not change
the speed):

* ``1x2``: one fine-tuning process with two torch threads;
* ``2x1``: two fine-tuning processes of one thread each, run at the same time on the same set (different seeds),
  reported together (the sum of their rates): how ``benchmarks/moleculenet.py --workers 2`` uses the box.

Each process warms up for one epoch, then times ``--epochs`` epochs of ``train_one_epoch`` (forward, backward,
clipping, Adam, scheduler; the batches are cut from the pre-collated ``GraphTensorSet``); its rate is the median
epoch's. Featurization is cached beforehand and not timed. Run it on a quiet machine::

    python benchmarks/finetune_speed.py                  # 5 sets, both modes, about 3 minutes
    python benchmarks/finetune_speed.py --datasets bace --modes 2x1

writes ``benchmarks/results/finetune_speed.{json,md}`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results" / "finetune_speed"
BASELINES = REPO_ROOT.parent / "shared" / "data" / "baselines" / "results.json"
DATASETS = ("bbbp", "bace", "clintox", "sider", "tox21")
MODES = {"1x2": (1, 2), "2x1": (2, 1)}  # processes x threads each

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def chemprop_rates() -> dict[str, float]:
    """chemprop's training molecules/s per set (2 threads), or {} without ../shared."""
    if not BASELINES.is_file():
        return {}
    methods = json.loads(BASELINES.read_text())["methods"]["chemprop"]
    return {name: float(methods[name]["train_mol_per_s"]) for name in DATASETS if name in methods}


def _arguments(dataset: str):
    from mmsa_hf.training.finetune import FinetuneArguments

    return FinetuneArguments(dataset=dataset, config="small", from_scratch=True, downstream_modalities=["graph"])


def prepare(dataset: str) -> int:
    """Featurize (and cache) ``dataset`` once before any timing; returns the training-split size."""
    import datasets

    from mmsa_hf.training.finetune import prepare_data

    datasets.disable_progress_bars()
    return len(prepare_data(_arguments(dataset))["splits"]["train"])


def time_epochs(dataset: str, threads: int, seed: int, epochs: int, batch_size: int, start,
                keep_freed_memory: bool = True) -> dict[str, Any]:
    """One process's median-epoch training rate (``start`` is a barrier shared by the processes of a mode). With
    ``keep_freed_memory`` the process keeps glibc's freed memory, as ``scripts/finetune.py`` does by default."""
    import torch

    from mmsa_hf.training.malloc import keep_freed_memory_for_run

    torch.set_num_threads(threads)
    kept = keep_freed_memory_for_run(keep_freed_memory, torch.device("cpu"))
    import datasets

    from mmsa_hf.training.finetune import (CellSettings, build_model, build_optimizer, build_scheduler,
                                           prepare_data, train_one_epoch)

    datasets.disable_progress_bars()
    data = prepare_data(_arguments(dataset))
    train = data["splits"]["train"]
    model = build_model(None, "small", data["overrides"], seed)
    settings = CellSettings(epochs=epochs + 1, batch_size=batch_size)
    optimizer = build_optimizer(model, settings)
    scheduler = build_scheduler(optimizer, settings, -(-len(train) // batch_size))
    generator = torch.Generator().manual_seed(seed)
    start.wait()
    train_one_epoch(model, optimizer, scheduler, train, settings, generator)  # warm-up
    rates = [train_one_epoch(model, optimizer, scheduler, train, settings, generator)["molecules_per_s"]
             for _ in range(epochs)]
    return {"seed": seed, "threads": torch.get_num_threads(), "epoch_rates": rates,
            "molecules_per_s": statistics.median(rates), "keep_freed_memory": bool(kept and kept["applied"])}


def _worker(args, queue) -> None:
    queue.put(time_epochs(*args))


def measure_mode(dataset: str, mode: str, epochs: int, batch_size: int,
                 keep_freed_memory: bool = True) -> dict[str, Any]:
    """Run the processes of ``mode`` at the same time on ``dataset``; their rates and the summed rate."""
    processes, threads = MODES[mode]
    context = mp.get_context("spawn")
    start, queue = context.Barrier(processes), context.Queue()
    settings = (epochs, batch_size, start, keep_freed_memory)
    workers = [context.Process(target=_worker, args=((dataset, threads, seed, *settings), queue))
               for seed in range(processes)]
    for worker in workers:
        worker.start()
    results = sorted((queue.get() for _ in workers), key=lambda r: r["seed"])
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"{dataset} {mode}: a worker exited with {worker.exitcode}")
    return {"processes": results, "molecules_per_s": sum(r["molecules_per_s"] for r in results)}


def markdown(results: dict[str, Any]) -> str:
    modes = results["modes"]
    lines = ["# Fine-tuning throughput vs chemprop (training molecules/s)", "",
             f"`benchmarks/finetune_speed.py`: graph-only `small` property model, batch {results['batch_size']}, "
             f"median of {results['epochs']} timed epochs after one warm-up; {results['machine']}. "
             "`1x2` = one process with 2 threads; `2x1` = two 1-thread processes at once, rates summed. "
             f"glibc keeps freed memory (`--keep_freed_memory`): {'yes' if results.get('keep_freed_memory') else 'no'}. "
             "chemprop 2.3.1: 2 threads (`shared/data/baselines/results.json`).", "",
             "| set | train molecules | chemprop | " + " | ".join(modes) + " | best / chemprop |",
             "|---|---|---|" + "---|" * len(modes) + "---|"]
    for name, row in results["datasets"].items():
        ours = [row[m]["molecules_per_s"] for m in modes]
        ref = row.get("chemprop")
        ratio = f"{max(ours) / ref:.2f}x" if ref else "n/a"
        lines.append(f"| {name} | {row['train_molecules']} | {ref if ref else 'n/a'} | "
                     + " | ".join(f"{v:.0f}" for v in ours) + f" | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per process (after one warm-up)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--results", default=str(RESULTS), help="output path without suffix")
    parser.add_argument("--no_keep_freed_memory", dest="keep_freed_memory", action="store_false",
                        help="time under glibc's malloc defaults (scripts/finetune.py's --no_keep_freed_memory)")
    args = parser.parse_args(argv)
    from mmsa_hf.atomic import write_text_atomic

    reference = chemprop_rates()
    results = {"batch_size": args.batch_size, "epochs": args.epochs, "modes": args.modes,
               "keep_freed_memory": args.keep_freed_memory,
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "datasets": {}}
    for name in args.datasets:
        row = {"train_molecules": prepare(name), "chemprop": reference.get(name)}
        for mode in args.modes:
            row[mode] = measure_mode(name, mode, args.epochs, args.batch_size, args.keep_freed_memory)
            print(f"{name} {mode}: {row[mode]['molecules_per_s']:.0f} molecules/s", flush=True)
        results["datasets"][name] = row
    write_text_atomic(Path(args.results + ".json"), json.dumps(results, indent=2) + "\n")
    write_text_atomic(Path(args.results + ".md"), markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
