#!/usr/bin/env python
"""Copy a finished pretraining run into the repository as a shipped checkpoint (``checkpoints/<name>/``).

    python scripts/ship_checkpoint.py --run ~/.cache/mmsa/runs/mmsa-small-32k --output checkpoints/mmsa-small \
        --benchmark benchmarks/results/moleculenet_v2.md benchmarks/results/moleculenet_regression.md

Writes safetensors weights, config, processor (without the remote-code copies, which ``mmsa push`` adds for the
Hub), ``training_info.json``, the loss curves
and a model card (the generated card plus the benchmark tables and the loss-curve figure). Refuses to write more
than ``--max_mb`` (25 MB by default).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path


def model_card(model, processor, training_info: dict, benchmarks: list[Path], repo_id: str,
               started_from: str | None = None) -> str:
    from mmsa_hf.model_card import generate_model_card

    card = generate_model_card(model, processor, training_info=training_info, repo_id=repo_id)
    extra = ["", "## In this repository", "",
             "The modeling and processing code files are not copied into `checkpoints/` (the installed `mmsa_hf` "
             "package provides the classes); `mmsa push --model checkpoints/<name> --repo-id ORG/NAME` writes them, "
             "with `auto_map`, for `trust_remote_code` users of the Hub copy.", "",
             "## Objective", "", objective_summary(model.config),
             *provenance(training_info.get("args", {}), started_from), "",
             "## Loss curves", "", "![pretraining loss curves](loss_curves.png)", ""]
    if benchmarks:
        extra += ["## MoleculeNet benchmark (paired, pretrained vs the same architecture from scratch)", ""]
        for table in benchmarks:  # each generated table opens with its headline metric and ends with its source
            extra += [table.read_text().strip(), ""]
    return card.rstrip() + "\n" + "\n".join(extra)


def objective_summary(config) -> str:
    """The pretraining terms this config switches on, in words (``docs/method.md`` section 2.8)."""
    views = [v for v in ("graph", "image", "geometry") if v == "graph" or getattr(config, f"use_{v}")]
    terms = []
    if len(views) > 1:
        terms += ["inter-view contrastive", "cross-view reconstruction"]
    if config.use_hypergraph:
        terms.append(f"{config.hypergraph_consistency_target}-molecule hypergraph recovery")
    if config.use_memory:
        terms.append(f"memory alignment ({config.memory_space} space)")
    if config.masked_atom_ratio > 0:
        terms.append(f"masked atom/bond attribute prediction on the GIN ({config.masked_atom_ratio:.0%} of atoms)")
    if getattr(config, "num_descriptors", 0) > 0:
        terms.append(f"regression of {config.num_descriptors} CDF-normalised RDKit descriptors from the pooled GIN "
                     f"output (weight {config.descriptor_weight:g})")
    if getattr(config, "num_fingerprint_bits", 0) > 0:
        terms.append(f"prediction of the {config.num_fingerprint_bits} folded Morgan bits (radius "
                     f"{config.fingerprint_radius}) from the pooled GIN output (weight {config.fingerprint_weight:g})")
    if getattr(config, "assay_tasks", None):
        terms.append(f"prediction of {len(config.assay_tasks)} binary bioassay outcomes (ToxCast without TOX21_*, HIV, "
                     f"MUV; masked BCE) from the pooled GIN output (weight {config.assay_weight:g})")
    return (f"Views: {', '.join(views)}. Terms: {'; '.join(terms)} (see the package's `docs/method.md`, "
            "section 2.8).")


def provenance(args: dict, started_from: str | None = None) -> list[str]:
    """For a continued run (``--init_from``): where it started, and the heads whose targets this run did not give
    (their terms were 0 here; the weights are the starting checkpoint's). ``started_from`` names the start as
    users know it (a shipped checkpoint) when ``--init_from`` was a local copy of it."""
    if not args.get("init_from"):
        if started_from:
            raise SystemExit(f"--started_from {started_from!r}: the run did not start from a checkpoint (--init_from)")
        return []
    idle = [name for flag, name in (("descriptor_targets", "descriptor"), ("fingerprint_targets", "fingerprint"),
                                    ("assay_targets", "assay")) if not args.get(flag)]
    start = f"`{started_from}` (from a local copy, `--init_from`)" if started_from else \
        f"`{args['init_from']}` (`--init_from`)"
    return ["", f"This run continued {start}: the numbers above count this run only. "
            f"Heads inherited from that checkpoint whose targets this run did not give ({', '.join(idle)}, where "
            "present) were not trained here, so their terms were 0 in this run."]


def strip_remote_code(folder: Path) -> None:
    """Drop the copied modeling/processing ``.py`` files and their ``auto_map`` entries: in the repository the
    installed package provides the classes, and ``mmsa push`` writes the remote code again for the Hub."""
    for path in folder.glob("*.py"):
        path.unlink()
    for name in ("config.json", "processor_config.json"):
        path = folder / name
        if path.is_file():
            payload = json.loads(path.read_text())
            _drop_auto_map(payload)
            path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _drop_auto_map(payload) -> None:
    """Remove ``auto_map`` and ``custom_pipelines`` (both point at the stripped code files) at every level."""
    if isinstance(payload, dict):
        payload.pop("auto_map", None)
        payload.pop("custom_pipelines", None)
        for value in payload.values():
            _drop_auto_map(value)


def ship(run: Path, output: Path, benchmarks: list[Path], max_mb: float, repo_id: str,
         started_from: str | None = None) -> list[str]:
    from transformers import AutoProcessor

    from mmsa_hf import MMSAForPreTraining
    from mmsa_hf.hub import save_for_hub

    final = run / "final"
    model = MMSAForPreTraining.from_pretrained(final)
    processor = AutoProcessor.from_pretrained(final)
    training_info = json.loads((final / "training_info.json").read_text())
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        staging = Path(tmp) / output.name
        files = save_for_hub(model, processor, staging, training_info=training_info,
                             model_card=model_card(model, processor, training_info, benchmarks, repo_id,
                                                    started_from))
        strip_remote_code(staging)
        for extra in (run / "loss_curves.png", final / "descriptor_normalizer.json"):
            if extra.is_file():
                shutil.copy2(extra, staging / extra.name)
        size_mb = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file()) / 2**20
        if size_mb > max_mb:
            raise SystemExit(f"{output}: {size_mb:.1f} MB exceeds --max_mb {max_mb}")
        previous = Path(tmp) / "previous"
        if output.exists():
            output.rename(previous)  # removed with the temporary folder
        staging.rename(output)  # same filesystem: the folder appears complete or not at all
    print(f"shipped {run} -> {output} ({size_mb:.1f} MB): {sorted(files)}")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="pretraining output_dir (holds final/)")
    parser.add_argument("--output", type=Path, default=Path("checkpoints/mmsa-small"))
    parser.add_argument("--benchmark", type=Path, nargs="*", default=[],
                        help="Markdown tables of benchmarks/moleculenet.py to put in the model card, in order")
    parser.add_argument("--repo_id", default="checkpoints/mmsa-small", help="name used in the usage snippet")
    parser.add_argument("--max_mb", type=float, default=25.0)
    parser.add_argument("--started_from", default=None,
                        help="for a continued run: the starting checkpoint's name for the card (e.g. "
                             "checkpoints/mmsa-small-assay) when --init_from was a local copy of it")
    args = parser.parse_args()
    missing = [str(path) for path in args.benchmark if not path.is_file()]
    if missing:
        parser.error(f"--benchmark: no such file(s) {missing}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    ship(args.run, args.output, args.benchmark, args.max_mb, args.repo_id, args.started_from)


if __name__ == "__main__":
    main()
