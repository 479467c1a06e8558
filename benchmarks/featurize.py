"""Featurization throughput of `MMSAProcessor` against the raw RDKit floor.

For each view (graph, 3D conformer, image) and for the whole processor (`num_proc=1`), this times our code against
the same RDKit calls alone (MolFromSmiles, the feature getters, AddHs + EmbedMolecule + MMFF + RemoveHs, the
drawing), with no tensors and no wrapping, on the first `--n` BBBP molecules. Floor and ours run alternately,
chunk by chunk, so that load from other processes affects both alike. Target: whole processor <= 1.3x floor time.

    python benchmarks/featurize.py --n 1000
    python benchmarks/featurize.py --only-hiv-graph-only    # graph-only featurize_dataset of HIV, cold cache

writes `benchmarks/results/featurize.json` and `featurize.md` and prints them. `run_processor_benchmark(n)` is
reusable (e.g. to compare with a run from a `datasets` cache); extra entries added to `results["runs"]` are
rendered in the Markdown table too.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import rdDepictor, rdDistGeom, rdForceFieldHelpers
from rdkit.Chem.Draw import rdMolDraw2D


REPO_ROOT = Path(__file__).resolve().parents[1]
BBBP = REPO_ROOT / "mmsa_hf" / "data" / "moleculenet" / "bbbp.csv.gz"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
TARGET_RATIO = 1.3
STATUS_COUNTS: dict[int, int] = {}  # conformer statuses seen by the whole-processor runs

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from mmsa_hf.atomic import write_text_atomic  # noqa: E402 - results are never half-written


def load_bbbp(n: int) -> list[str]:
    """The first `n` BBBP SMILES (package-shipped copy)."""
    with gzip.open(BBBP, "rt", newline="") as handle:
        return [row["smiles"] for _, row in zip(range(n), csv.DictReader(handle))]


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# --------------------------------------------------------------------------- the raw RDKit floor
def floor_graph(mol: Chem.Mol) -> tuple[list, list]:
    atoms = [
        (
            a.GetAtomicNum(),
            a.GetChiralTag(),
            a.GetTotalDegree(),
            a.GetFormalCharge(),
            a.GetTotalNumHs(),
            a.GetNumRadicalElectrons(),
            a.GetHybridization(),
            a.GetIsAromatic(),
            a.IsInRing(),
        )
        for a in mol.GetAtoms()
    ]
    bonds = [
        (b.GetBeginAtomIdx(), b.GetEndAtomIdx(), b.GetBondType(), b.GetStereo(), b.GetIsConjugated())
        for b in mol.GetBonds()
    ]
    return atoms, bonds


def floor_conformer(mol: Chem.Mol) -> Any:
    mol_h = Chem.AddHs(mol)
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = 0
    if rdDistGeom.EmbedMolecule(mol_h, params) < 0:
        return None
    rdForceFieldHelpers.MMFFOptimizeMolecule(mol_h)
    return Chem.RemoveHs(mol_h).GetConformer().GetPositions()


def floor_image(mol: Chem.Mol, size: int = 224) -> bytes:
    mol = Chem.Mol(mol)
    rdDepictor.Compute2DCoords(mol)
    drawer = rdMolDraw2D.MolDraw2DCairo(size, size)
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    return drawer.GetDrawingText()


FLOORS: dict[str, Callable[[Sequence[str]], Any]] = {
    "graph": lambda chunk: [floor_graph(Chem.MolFromSmiles(s)) for s in chunk],
    "3d": lambda chunk: [floor_conformer(Chem.MolFromSmiles(s)) for s in chunk],
    "image": lambda chunk: [floor_image(Chem.MolFromSmiles(s)) for s in chunk],
    "processor": lambda chunk: [
        (floor_graph(m), floor_conformer(m), floor_image(m)) for m in map(Chem.MolFromSmiles, chunk)
    ],
}


# --------------------------------------------------------------------------- ours (tensors included)
def _ours(processor) -> dict[str, Callable[[Sequence[str]], Any]]:
    from mmsa_hf.processing import MoleculeError

    fe, ip = processor.feature_extractor, processor.image_processor

    def prepared(chunk):
        mols = []
        for smiles in chunk:
            try:
                mols.append(fe.prepare_molecule(smiles))
            except MoleculeError:  # e.g. over max_atoms: the floor still pays for it, ours skips it
                pass
        return mols

    def graph(chunk):
        with rdBase.BlockLogs():
            feats = [fe.graph_features(mol) for mol in prepared(chunk)]
        return {
            key: torch.from_numpy(np.concatenate([f[key] for f in feats], axis=1 if key == "edge_index" else 0))
            for key in ("atom_features", "bond_features", "edge_index", "atomic_numbers")
        }

    def conformer(chunk):
        with rdBase.BlockLogs():
            results = [fe.conformer(mol) for mol in prepared(chunk)]
        return torch.from_numpy(np.concatenate([pos for pos, _ in results])), torch.tensor([s for _, s in results])

    def image(chunk):
        with rdBase.BlockLogs():
            pngs = [ip.depict(mol) for mol in prepared(chunk)]
        return torch.from_numpy(ip.collate(pngs))

    def whole(chunk):
        out = processor(chunk, num_proc=1)
        for status in out["conformer_status"].tolist():
            STATUS_COUNTS[status] = STATUS_COUNTS.get(status, 0) + 1
        return out

    return {"graph": graph, "3d": conformer, "image": image, "processor": whole}


def compare(view: str, smiles: Sequence[str], processor, chunk_size: int = 100) -> dict[str, Any]:
    """Time floor and ours for one view, alternating chunk by chunk."""
    floor_fn, ours_fn = FLOORS[view], _ours(processor)[view]
    floor_s = ours_s = 0.0
    for chunk in _chunks(smiles, chunk_size):
        start = time.perf_counter()
        floor_fn(chunk)
        floor_s += time.perf_counter() - start
        start = time.perf_counter()
        ours_fn(chunk)
        ours_s += time.perf_counter() - start
    n = len(smiles)
    return {
        "n": n,
        "floor_s": round(floor_s, 3),
        "ours_s": round(ours_s, 3),
        "floor_mol_per_s": round(n / floor_s, 1),
        "ours_mol_per_s": round(n / ours_s, 1),
        "ratio": round(ours_s / floor_s, 3),
    }


def run_processor_benchmark(n: int, processor=None, batch_size: int = 100, num_proc: int = 1) -> dict[str, Any]:
    """Whole-processor throughput alone: `processor(batch)` over the first `n` BBBP molecules, in batches."""
    from mmsa_hf.processing import MMSAProcessor

    processor = processor or MMSAProcessor(on_error="mask", show_progress=False)
    smiles = load_bbbp(n)
    start = time.perf_counter()
    atoms = 0
    for chunk in _chunks(smiles, batch_size):
        atoms += processor(chunk, num_proc=num_proc)["atom_features"].shape[0]
    seconds = time.perf_counter() - start
    return {"n": len(smiles), "atoms": atoms, "seconds": round(seconds, 3), "mol_per_s": round(len(smiles) / seconds, 1)}


def environment() -> dict[str, Any]:
    import rdkit
    import transformers

    return {
        "python": platform.python_version(),
        "rdkit": rdkit.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def to_markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Featurization benchmark (first {results['n']} BBBP molecules, num_proc=1)",
        "",
        "| view | floor (RDKit only) mol/s | ours mol/s | ours / floor time |",
        "|---|---:|---:|---:|",
    ]
    for view, row in results["views"].items():
        lines.append(f"| {view} | {row['floor_mol_per_s']} | {row['ours_mol_per_s']} | {row['ratio']}x |")
    whole = results["views"].get("processor")
    if whole is not None:
        verdict = "meets" if whole["ratio"] <= TARGET_RATIO else "MISSES"
        lines += ["", f"Whole processor: {whole['ratio']}x the floor time; {verdict} the <= {TARGET_RATIO}x target."]
    if results.get("conformer_statuses"):
        counts = ", ".join(f"{name} {count}" for name, count in results["conformer_statuses"].items())
        lines += ["", f"Conformer statuses (whole processor, `on_error='mask'`): {counts}."]
    if results.get("runs"):
        lines += ["", "| run | molecules | seconds | mol/s |", "|---|---:|---:|---:|"]
        for name, run in results["runs"].items():
            lines.append(f"| {name} | {run['n']} | {run['seconds']} | {run['mol_per_s']} |")
    env = results["environment"]
    lines += [
        "",
        f"Environment: Python {env['python']}, RDKit {env['rdkit']}, transformers {env['transformers']}, "
        f"torch {env['torch']}, {env['cpu_count']} CPUs (shared with other jobs while measured);"
        f" processor max_atoms={results.get('max_atoms')}.",
        "Floor: MolFromSmiles, the atom/bond getters, AddHs + EmbedMolecule (ETKDGv3, seed 0) + MMFFOptimizeMolecule"
        " + RemoveHs, and Compute2DCoords + MolDraw2DCairo, with no tensors. Ours adds the fallback ladder, the"
        " checks, canonical SMILES, PNG decoding, normalisation and tensors. Floor and ours alternate every"
        f" {results['chunk_size']} molecules.",
    ]
    if results.get("hiv_graph_only"):
        lines += hiv_markdown(results["hiv_graph_only"])
    return "\n".join(lines) + "\n"


def run_cache_benchmark(n: int, num_proc: int = 2) -> dict[str, dict[str, Any]]:
    """First vs cached ``featurize_dataset`` run (``Dataset.map``) on the first ``n`` BBBP rows, in a fresh
    ``datasets`` cache: the second run must do no RDKit work and take a small fraction of the first."""
    import tempfile

    import datasets

    from mmsa_hf.data import featurize_dataset
    from mmsa_hf.training.common import build_processor

    processor = build_processor(image_size=224)
    with tempfile.TemporaryDirectory() as cache:
        csv = Path(cache) / "bbbp_head.csv"
        csv.write_text("smiles\n" + "\n".join(load_bbbp(n)) + "\n")
        table = datasets.load_dataset("csv", data_files=str(csv), split="train", cache_dir=cache)
        runs = {}
        for label in ("first run", "cached run"):
            start = time.perf_counter()
            featurize_dataset(table, processor, num_proc=num_proc, on_error="skip")
            seconds = time.perf_counter() - start
            runs[f"featurize_dataset {label} (num_proc={num_proc})"] = {
                "n": n, "seconds": round(seconds, 3), "mol_per_s": round(n / seconds, 1)
            }  # fmt: skip
    return runs


def run_hiv_graph_only_benchmark(num_proc: int = 2) -> dict[str, Any]:
    """Graph-only featurization of HIV (41k molecules) for fine-tuning, cold: a fresh ``datasets`` cache, the
    scaffold split loaded from the package-shipped CSV, then ``featurize_dataset`` of every split with a graph-only
    processor (``views=("graph",)``, what fine-tuning a ``downstream_modalities=["graph"]`` model uses) and
    ``num_proc`` processes; then the same call again (cache hit). Target: <= 120 s cold on 2 cores."""
    import resource
    import tempfile

    from mmsa_hf.data import featurize_dataset, load_moleculenet
    from mmsa_hf.training.common import PRESET_IMAGE_SIZE, build_processor

    processor = build_processor(image_size=PRESET_IMAGE_SIZE["small"], views=("graph",))
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        splits = load_moleculenet("hiv", cache_dir=cache)
        load_seconds = time.perf_counter() - start
        cpu_before = _cpu_seconds(resource)
        start = time.perf_counter()
        featurized = featurize_dataset(splits, processor, num_proc=num_proc)
        featurize_seconds = time.perf_counter() - start
        cpu = _cpu_seconds(resource) - cpu_before
        start = time.perf_counter()
        featurize_dataset(splits, processor, num_proc=num_proc)
        cached_seconds = time.perf_counter() - start
    molecules = sum(len(split) for split in splits.values())
    return {
        "molecules": molecules,
        "molecules_featurized": sum(len(split) for split in featurized.values()),
        "num_proc": num_proc,
        "load_split_seconds": round(load_seconds, 2),
        "featurize_seconds": round(featurize_seconds, 2),
        "cold_total_seconds": round(load_seconds + featurize_seconds, 2),
        "featurize_molecules_per_s": round(molecules / featurize_seconds, 1),
        "cpu_seconds_per_molecule": round(cpu / molecules, 6),
        "cores_used": round(cpu / featurize_seconds, 2),
        "cached_seconds": round(cached_seconds, 2),
        "columns": sorted(next(iter(featurized.values())).column_names),
        "target_seconds": 120.0,
        "meets_target": load_seconds + featurize_seconds <= 120.0,
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_seconds(resource) -> float:
    """CPU seconds of this process and its reaped children (the ``datasets.map`` workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def hiv_markdown(row: dict[str, Any]) -> list[str]:
    """The Markdown section of the HIV graph-only run."""
    verdict = "meets" if row["meets_target"] else "MISSES"
    return [
        "", f"## HIV, graph-only, for fine-tuning (`featurize_dataset`, num_proc={row['num_proc']}, cold cache)", "",
        "| step | seconds |", "|---|---:|",
        f"| load + scaffold split (fresh `datasets` cache) | {row['load_split_seconds']} |",
        f"| featurize {row['molecules']} molecules, graph only | {row['featurize_seconds']} |",
        f"| **cold total** | **{row['cold_total_seconds']}** |",
        f"| second call (cache hit) | {row['cached_seconds']} |",
        "",
        f"{row['featurize_molecules_per_s']} molecules/s; {row['cpu_seconds_per_molecule'] * 1000:.3f} CPU ms per "
        f"molecule; {row['cores_used']} cores used (load average {row['load_average_before']} before, "
        f"{row['load_average_after']} after; the 2 cores were shared with other jobs). No conformer, no image: "
        f"columns {', '.join(row['columns'])}. Target <= {row['target_seconds']:.0f} s cold: {verdict}.",
    ]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="number of BBBP molecules (default 1000)")
    parser.add_argument("--chunk-size", type=int, default=100, help="molecules per alternation / batch")
    parser.add_argument("--views", default="graph,3d,image,processor", help="comma-separated subset")
    parser.add_argument("--max-atoms", type=int, default=256, help="processor max_atoms (BBBP goes up to 132)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for featurize.json / featurize.md")
    parser.add_argument("--cache-n", type=int, default=300, help="molecules for the datasets first/cached run")
    parser.add_argument("--only-cache-run", action="store_true",
                        help="only (re)measure the datasets first/cached run and merge it into featurize.json")
    parser.add_argument("--only-hiv-graph-only", action="store_true",
                        help="only (re)measure the graph-only HIV featurize_dataset run (merged into featurize.json)")
    args = parser.parse_args(argv)
    if args.only_hiv_graph_only:
        results = json.loads((args.out / "featurize.json").read_text())
        results["hiv_graph_only"] = run_hiv_graph_only_benchmark()
        write_text_atomic(args.out / "featurize.json", json.dumps(results, indent=2) + "\n")
        write_text_atomic(args.out / "featurize.md", to_markdown(results))
        print(to_markdown(results))
        return results
    if args.only_cache_run:
        results = json.loads((args.out / "featurize.json").read_text())
        results["runs"].update(run_cache_benchmark(args.cache_n))
        write_text_atomic(args.out / "featurize.json", json.dumps(results, indent=2) + "\n")
        write_text_atomic(args.out / "featurize.md", to_markdown(results))
        print(to_markdown(results))
        return results

    from mmsa_hf.processing import MMSAFeatureExtractor, MMSAProcessor

    # BBBP row 921 has 132 heavy atoms, over the default max_atoms=128: raise the limit so that floor and ours
    # do the same work on every molecule.
    processor = MMSAProcessor(MMSAFeatureExtractor(max_atoms=args.max_atoms), on_error="mask", show_progress=False)
    smiles = load_bbbp(args.n)
    block_logs = rdBase.BlockLogs()  # noqa: F841 - RDKit warnings off for floor and ours alike
    processor(smiles[:5])  # warm-up (imports, font cache)
    results: dict[str, Any] = {
        "n": len(smiles), "chunk_size": args.chunk_size, "max_atoms": args.max_atoms, "views": {}, "runs": {}
    }  # fmt: skip
    for view in args.views.split(","):
        results["views"][view] = compare(view, smiles, processor, args.chunk_size)
        print(f"{view}: {results['views'][view]}", file=sys.stderr, flush=True)
    if "processor" in results["views"]:
        row = results["views"]["processor"]
        results["target_ratio"] = TARGET_RATIO
        results["meets_target"] = row["ratio"] <= TARGET_RATIO
        results["runs"]["processor (direct, num_proc=1)"] = {
            "n": row["n"], "seconds": row["ours_s"], "mol_per_s": row["ours_mol_per_s"]
        }  # fmt: skip
    if STATUS_COUNTS:
        from mmsa_hf.processing import CONFORMER_STATUSES

        results["conformer_statuses"] = {CONFORMER_STATUSES[k]: v for k, v in sorted(STATUS_COUNTS.items())}
    results["runs"].update(run_cache_benchmark(args.cache_n))
    results["environment"] = environment()

    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "featurize.json", json.dumps(results, indent=2) + "\n")
    markdown = to_markdown(results)
    write_text_atomic(args.out / "featurize.md", markdown)
    print(json.dumps(results, indent=2))
    print(markdown)
    return results


if __name__ == "__main__":
    main()
