#!/usr/bin/env python
"""The headline MoleculeNet table: MMSA pretrained vs. from scratch vs. pretraining ablations,
next to chemprop 2.3.1 and RF-ECFP4 measured on the same scaffold split.

One command reproduces the committed table on a 2-core CPU box:

    python benchmarks/moleculenet.py --jobs 2

Time budget, measured: one-off featurization of the 8,000-molecule corpus subsample and the five sets
(cached by ``datasets`` afterwards) 25–40 min; five pretraining runs 16 min; 90 fine-tuning runs 44 min.

Stages (each skipped when its output exists, so an interrupted run resumes):
1. pretrain five `small` models with the same corpus, steps and seed: the full model and four
   ablations (no image, no 3D, no hypergraph, no memory bank);
2. fine-tune each of them, and the same architecture from scratch, on BBBP, BACE, ClinTox, SIDER
   and Tox21 with seeds 0, 1, 2 on the reference scaffold split (selection on validation ROC-AUC
   only; test ROC-AUC at the best validation epoch);
3. write ``benchmarks/results/moleculenet.{json,md}`` and the README's headline table.

Fine-tuning follows the GraphMVP protocol (``--downstream_modalities graph``): the pretrained GIN
is fine-tuned alone, so a molecule needs no image or conformer at prediction time. Jobs run as
separate single-threaded processes, ``--jobs`` at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = ["bbbp", "bace", "clintox", "sider", "tox21"]
VARIANTS = {
    "mmsa": [],
    "no_image": ["--no_image"],
    "no_geometry": ["--no_geometry"],
    "no_hypergraph": ["--no_hypergraph"],
    "no_memory": ["--no_memory"],
}
ROW_LABELS = {
    "mmsa": "(a) MMSA pretrained",
    "scratch": "(b) same architecture, from scratch",
    "no_image": "(c) ablation: pretrained without image",
    "no_geometry": "(c) ablation: pretrained without 3D",
    "no_hypergraph": "(c) ablation: pretrained without hypergraph",
    "no_memory": "(c) ablation: pretrained without memory bank",
}
GAP_ANALYSIS = (
    "**Why the targets are missed, and what we think would close the gap.** The CPU pretraining here is tiny: "
    "600 steps × 64 molecules (about 5 passes over 8,000 molecules, 8 minutes), orders of magnitude below the "
    "GraphMVP / Hu et al. scale (50k–2M molecules, 100 epochs). At this scale pretraining gives no gain over the "
    "same architecture from scratch, and the ablation rows differ from each other by less than the seed spread "
    "(std up to 4.7), so this run cannot rank the components. Fine-tuning was capped at 20 epochs (best epochs "
    "of 14–18 on BACE and SIDER suggest under-training; the standard protocol uses 100). What we would do next: "
    "pretrain the `base` preset on the 1.58M-molecule MOSES corpus on GPUs (`benchmarks/gpu_pretrain.sh` is the "
    "smoke check), fine-tune for 100 epochs, and try `hypergraph_consistency_target=\"views\"` (the default "
    "consistency term saturates at about 0.12 within 50 steps, so it teaches little). Selection stayed on "
    "validation only; nothing was tuned on test."
)
README_BEGIN = "<!-- moleculenet-table:begin -->"
README_END = "<!-- moleculenet-table:end -->"


def _env(threads: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               HF_HUB_DISABLE_XET="1", MMSA_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    return env


def _run(cmd: list[str], log: Path, threads: int = 1) -> float:
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "w") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=_env(threads), cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}), see {log}: {' '.join(cmd)}")
    return time.time() - start


def _launch(script: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines",
            "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "scripts" / script), *args]


def pretrain_args(args: argparse.Namespace, variant: str, out: Path) -> list[str]:
    return _launch("pretrain.py", "--config", args.preset, "--corpus", args.corpus, "--max_molecules",
                   str(args.max_molecules), "--max_steps", str(args.pretrain_steps), "--batch_size",
                   str(args.pretrain_batch_size), "--seed", "0", "--output_dir", str(out), "--num_proc", "2",
                   "--checkpointing_steps", "500", *VARIANTS[variant])


def finetune_args(args: argparse.Namespace, source: list[str], dataset: str, out: Path) -> list[str]:
    return _launch("finetune.py", *source, "--dataset", dataset, "--split", "scaffold", "--seeds", "0", "1", "2",
                   "--epochs", str(args.epochs), "--patience", str(args.patience), "--batch_size", "32",
                   "--learning_rate", str(args.learning_rate), "--dropout", str(args.dropout),
                   "--downstream_modalities", "graph",
                   "--output_dir", str(out), "--no_save_checkpoints", "--num_proc", "2")


def prepare(args: argparse.Namespace, work: Path) -> None:
    """Featurize the corpus subsample and the five sets once (2 processes), so jobs hit the cache."""
    code = f"""
import sys
from mmsa_hf.training.common import build_processor, PRESET_IMAGE_SIZE
from mmsa_hf.data import load_pretraining_corpus, featurize_dataset, load_moleculenet
processor = build_processor(image_size=PRESET_IMAGE_SIZE[{args.preset!r}])
corpus = load_pretraining_corpus({args.corpus!r}, exclude_test=True, num_proc=2)
corpus = corpus.shuffle(seed=0).select(range(min({args.max_molecules}, len(corpus))))
featurize_dataset(corpus, processor, num_proc=2, on_error="skip")
for name in {DATASETS!r}:
    dsd = load_moleculenet(name, split="scaffold", num_proc=2)
    for split in dsd.values():
        featurize_dataset(split, processor, num_proc=2, on_error="skip")
"""
    seconds = _run([sys.executable, "-c", code], work / "logs" / "prepare.log", threads=2)
    print(f"prepared features in {seconds:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default=str(REPO / "runs" / "moleculenet_benchmark"))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "moleculenet"))
    parser.add_argument("--preset", default="small")
    parser.add_argument("--corpus", default="moleculenet")
    parser.add_argument("--max_molecules", type=int, default=8000)
    parser.add_argument("--pretrain_steps", type=int, default=600)
    parser.add_argument("--pretrain_batch_size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--dropout", type=float, default=0.5, help="fine-tuning dropout (Hu et al. 2020 protocol)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--table_only", action="store_true", help="only rebuild the table from finished runs")
    args = parser.parse_args()
    work = Path(args.work_dir)
    timings: dict[str, float] = {}

    if not args.table_only:
        if not (work / "prepared").exists():
            timings["prepare_s"] = _timed_stage(lambda: prepare(args, work))
            (work / "prepared").write_text("ok")

        def pretrain(variant: str) -> None:
            out = work / "pretrain" / variant
            if (out / "final" / "model.safetensors").exists():
                return
            seconds = _run(pretrain_args(args, variant, out), work / "logs" / f"pretrain_{variant}.log")
            print(f"pretrained {variant} in {seconds / 60:.1f} min", flush=True)

        def finetune(job: tuple[str, str]) -> None:
            row, dataset = job
            out = work / "finetune" / row / dataset
            if (out / "results.json").exists():
                return
            source = ["--from_scratch", "--config", args.preset] if row == "scratch" else \
                ["--model", str(work / "pretrain" / row / "final")]
            seconds = _run(finetune_args(args, source, dataset, out), work / "logs" / f"finetune_{row}_{dataset}.log")
            print(f"fine-tuned {row} on {dataset} in {seconds / 60:.1f} min", flush=True)

        with ThreadPoolExecutor(args.jobs) as pool:
            start = time.time()
            list(pool.map(pretrain, args.variants))
            timings["pretrain_wall_s"] = time.time() - start
            start = time.time()
            jobs = [(row, d) for row in ["scratch", *args.variants] for d in args.datasets]
            list(pool.map(finetune, jobs))
            timings["finetune_wall_s"] = time.time() - start

    out = Path(args.results)
    if args.table_only and out.with_suffix(".json").exists():  # keep the timings of the run that made the rows
        timings = json.loads(out.with_suffix(".json").read_text()).get("timings", {})
    results = collect(args, work, timings)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    table = render_markdown(results)
    out.with_suffix(".md").write_text(table)
    update_readme(table)
    print(table)


def _timed_stage(fn) -> float:
    start = time.time()
    fn()
    return time.time() - start


def _load_baselines() -> dict:
    shared = REPO.parent / "shared" / "data" / "baselines" / "results.json"
    path = shared if shared.exists() else REPO / "benchmarks" / "reference_baselines.json"
    return json.loads(path.read_text())


def collect(args: argparse.Namespace, work: Path, timings: dict[str, float]) -> dict:
    """Gather every fine-tuning results.json into one table (ROC-AUC × 100)."""
    rows: dict[str, dict] = {}
    for row in ["mmsa", "scratch", *[v for v in VARIANTS if v != "mmsa"]]:
        per_dataset = {}
        for dataset in args.datasets:
            path = work / "finetune" / row / dataset / "results.json"
            if not path.exists():
                continue
            res = json.loads(path.read_text())
            tests = [100 * r["test"]["roc_auc"] for r in res["runs"]]
            vals = [100 * r["validation"]["roc_auc"] for r in res["runs"]]
            speeds = [r["mean_epoch_molecules_per_s"] for r in res["runs"] if r["mean_epoch_molecules_per_s"]]
            per_dataset[dataset] = {
                "test_mean": sum(tests) / len(tests),
                "test_std": (sum((t - sum(tests) / len(tests)) ** 2 for t in tests) / len(tests)) ** 0.5,
                "validation_mean": sum(vals) / len(vals),
                "seeds": [r["seed"] for r in res["runs"]],
                "test_per_seed": tests,
                "best_epochs": [r["best_epoch"] for r in res["runs"]],
                "tasks_skipped_in_test": res["runs"][0]["test"]["num_tasks_skipped"],
                "train_molecules_per_s": sum(speeds) / len(speeds) if speeds else None,
                "wall_seconds": res["wall_seconds"],
            }
        if per_dataset:
            rows[row] = {"label": ROW_LABELS[row], "datasets": per_dataset,
                         "average": sum(d["test_mean"] for d in per_dataset.values()) / len(per_dataset)
                         if len(per_dataset) == len(args.datasets) else None}
    pretraining = {}
    for variant in VARIANTS:
        summary = work / "pretrain" / variant / "summary.json"
        corpus = work / "pretrain" / variant / "corpus.json"
        if summary.exists():
            pretraining[variant] = {"summary": json.loads(summary.read_text()),
                                    "corpus": json.loads(corpus.read_text()) if corpus.exists() else None}
    baselines = _load_baselines()
    reference = {}
    for method, per in baselines["methods"].items():
        sets = {d: per[d] for d in args.datasets if d in per}
        reference[method] = {"datasets": sets, "average": sum(v["mean"] for v in sets.values()) / len(sets)}
    targets = {}
    if "mmsa" in rows and rows["mmsa"]["average"] is not None:
        a = rows["mmsa"]["average"]
        chemprop = reference["chemprop"]["average"]
        best_reference = max(r["average"] for r in reference.values())
        targets = {
            "mmsa_average": a,
            "chemprop_average": chemprop,
            "target_chemprop_plus_2": chemprop + 2,
            "met_chemprop_plus_2": a >= chemprop + 2,
            "target_best_reference_plus_2": best_reference + 2,
            "met_best_reference_plus_2": a >= best_reference + 2,
        }
        if "scratch" in rows and rows["scratch"]["average"] is not None:
            targets["scratch_average"] = rows["scratch"]["average"]
            targets["target_scratch_plus_2"] = rows["scratch"]["average"] + 2
            targets["met_scratch_plus_2"] = a >= rows["scratch"]["average"] + 2
    return {
        "protocol": {
            "split": "scaffold, identical to ../shared/data/splits/<name>_scaffold.json (tested)",
            "datasets": list(args.datasets),
            "seeds": [0, 1, 2],
            "selection": "best validation ROC-AUC epoch; test ROC-AUC reported there",
            "fine_tuning": {"downstream_modalities": ["graph"], "epochs": args.epochs, "patience": args.patience,
                            "batch_size": 32, "learning_rate": args.learning_rate,
                            "dropout": args.dropout},
            "pretraining": {"preset": args.preset, "corpus": args.corpus, "max_molecules": args.max_molecules,
                            "steps": args.pretrain_steps, "batch_size": args.pretrain_batch_size, "seed": 0},
            "machine": "2 CPU cores, no GPU; one thread per job, jobs in parallel",
        },
        "rows": rows,
        "pretraining": pretraining,
        "reference": reference,
        "reference_source": "../shared/data/baselines/README.md (chemprop 2.3.1 defaults, 50 epochs, best-val-loss "
                            "checkpoint; RF on ECFP4 2048 bits, 500 trees), same split, same kind of machine",
        "targets": targets,
        "gap_analysis": GAP_ANALYSIS if targets and not (targets["met_chemprop_plus_2"]
                                                         and targets.get("met_scratch_plus_2", True)) else None,
        "timings": timings,
    }


def render_markdown(results: dict) -> str:
    datasets = results["protocol"]["datasets"]
    head = "| model | " + " | ".join(d.upper() if d != "clintox" else "ClinTox" for d in datasets) + " | average |"
    lines = [head, "|---" * (len(datasets) + 2) + "|"]
    for row in results["rows"].values():
        cells = [f"{row['datasets'][d]['test_mean']:.2f} ± {row['datasets'][d]['test_std']:.2f}"
                 if d in row["datasets"] else "–" for d in datasets]
        avg = f"**{row['average']:.2f}**" if row["average"] is not None else "–"
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {avg} |")
    names = {"chemprop": "(d) chemprop 2.3.1 (reference)", "rf_ecfp4": "(d) RF on ECFP4 (reference)"}
    for method, ref in results["reference"].items():
        cells = [f"{ref['datasets'][d]['mean']:.2f} ± {ref['datasets'][d]['std']:.2f}" for d in datasets]
        lines.append(f"| {names.get(method, method)} | " + " | ".join(cells) + f" | **{ref['average']:.2f}** |")
    p = results["protocol"]
    text = ["Test ROC-AUC × 100, mean ± std over seeds 0, 1, 2, scaffold split.", "", *lines, ""]
    t = results.get("targets") or {}
    if t:
        text.append(
            f"Targets: MMSA average {t['mmsa_average']:.2f} vs chemprop + 2 = {t['target_chemprop_plus_2']:.2f} "
            f"(**{'met' if t['met_chemprop_plus_2'] else 'missed'}**), vs best reference + 2 = "
            f"{t['target_best_reference_plus_2']:.2f} (**{'met' if t['met_best_reference_plus_2'] else 'missed'}**)"
            + (f", vs scratch + 2 = {t['target_scratch_plus_2']:.2f} "
               f"(**{'met' if t['met_scratch_plus_2'] else 'missed'}**)." if "target_scratch_plus_2" in t else ".")
        )
        text.append("")
    if t and not (t["met_chemprop_plus_2"] and t.get("met_scratch_plus_2", True)):
        text.append(GAP_ANALYSIS)
        text.append("")
    pre = results["pretraining"].get("mmsa", {}).get("summary")
    if pre:
        text.append(
            f"Pretraining ({p['pretraining']['preset']} preset): {pre['global_step']} steps × batch "
            f"{p['pretraining']['batch_size']} on {p['pretraining']['max_molecules']} molecules of the "
            f"`{p['pretraining']['corpus']}` corpus (downstream scaffold-test molecules excluded), "
            f"{pre['wall_seconds'] / 60:.1f} min wall at {pre['molecules_per_s']:.0f} molecules/s on one CPU thread. "
            f"Fine-tuning: GIN only (GraphMVP protocol), ≤ {p['fine_tuning']['epochs']} epochs, patience "
            f"{p['fine_tuning']['patience']}, batch 32, lr {p['fine_tuning']['learning_rate']}, dropout "
            f"{p['fine_tuning']['dropout']}."
        )
        text.append("")
    speeds = {d: v["train_molecules_per_s"] for d, v in results["rows"].get("mmsa", {}).get("datasets", {}).items()}
    if speeds:
        chem = results["reference"].get("chemprop", {}).get("datasets", {})
        text.append("Fine-tuning throughput (molecules/s, mean over epochs and seeds, 1 CPU thread) vs chemprop "
                    "(2 threads, from the baselines README):")
        text.append("")
        text.append("| dataset | MMSA fine-tuning | chemprop |")
        text.append("|---|---|---|")
        baselines = _load_baselines()["methods"]["chemprop"]
        for d, s in speeds.items():
            text.append(f"| {d} | {s:.0f} | {baselines.get(d, {}).get('train_mol_per_s', '–')} |")
        text.append("")
    text.append("Measured on this project's 2-core CPU box by `python benchmarks/moleculenet.py`; the paper's own "
                "numbers are not reproduced here.")
    return "\n".join(text) + "\n"


def update_readme(table: str) -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    if README_BEGIN in text and README_END in text:
        before, rest = text.split(README_BEGIN, 1)
        _, after = rest.split(README_END, 1)
        readme.write_text(before + README_BEGIN + "\n" + table + README_END + after)


if __name__ == "__main__":
    main()
