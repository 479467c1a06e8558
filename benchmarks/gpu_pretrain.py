#!/usr/bin/env python
"""Bounded bf16 pretraining of the ``base`` preset on CUDA: molecules/s, peak memory, falling loss.

The GPU machine has torch, transformers, accelerate and torch-geometric but not RDKit or datasets,
so batches are featurized here first and carried as safetensors:

    python benchmarks/gpu_pretrain.py prepare --n 2048 --image_size 224 --out benchmarks/gpu_batches
    bash benchmarks/gpu_pretrain.sh            # on the GPU machine (carry benchmarks/gpu_batches)

``run`` imports only ``mmsa_hf/modeling`` (loaded as a stand-alone package, as Hub remote code is),
never the processor, so nothing needs RDKit there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def prepare(args: argparse.Namespace) -> None:
    """Featurize ``n`` corpus molecules and save collated batches as safetensors."""
    import pandas as pd
    from safetensors.torch import save_file

    from mmsa_hf.training.common import build_processor

    smiles = pd.read_csv(args.corpus)["SMILES" if "moses" in args.corpus else "smiles"].tolist()[: args.n]
    processor = build_processor(image_size=args.image_size)
    records = processor.featurize(smiles, on_error="skip", num_proc=args.num_proc)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for start in range(0, len(records) - args.batch_size + 1, args.batch_size):
        batch = processor.collate(records[start : start + args.batch_size])
        tensors = {k: v.contiguous() for k, v in batch.items() if isinstance(v, torch.Tensor)}
        save_file(tensors, str(out / f"batch_{count:05d}.safetensors"))
        count += 1
    (out / "meta.json").write_text(json.dumps({"n": len(records), "batch_size": args.batch_size,
                                               "image_size": args.image_size, "batches": count}))
    print(f"wrote {count} batches of {args.batch_size} to {out}")


def run(args: argparse.Namespace) -> None:
    """Train ``base`` for ``steps`` steps in bf16 over the carried batches; print and save numbers."""
    from accelerate import Accelerator
    from safetensors.torch import load_file

    sys.path.insert(0, str(REPO / "mmsa_hf"))
    import modeling  # the flat modeling folder, imported without mmsa_hf (and so without RDKit)

    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.cpu)
    files = sorted(Path(args.batches).glob("batch_*.safetensors"))
    if not files:
        raise SystemExit(f"no batches in {args.batches}: run `prepare` first")
    batches = [load_file(str(f)) for f in files]
    config = modeling.MMSAConfig.from_preset(args.preset)
    model = modeling.MMSAForPreTraining(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    losses, seen, timed = [], 0, 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    for step in range(args.steps):
        batch = {k: v.to(device) for k, v in batches[step % len(batches)].items()}
        batch["valid_mask"] = batch["valid_mask"].bool()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with accelerator.autocast():
            outputs = model(**batch)
        accelerator.backward(outputs.loss)
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            timed += time.perf_counter() - start
            seen += int(batch["valid_mask"].sum())
        losses.append(float(outputs.loss.detach().float()))
        if step % 10 == 0:
            print(f"step {step} loss {losses[-1]:.4f} anchors_in_use {float(outputs.anchors_in_use):.0f}", flush=True)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    result = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "preset": args.preset,
        "mixed_precision": args.mixed_precision,
        "steps": args.steps,
        "batch_size": int(batches[0]["valid_mask"].numel()),
        "molecules_per_s": seen / max(timed, 1e-9),
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "loss_first10": first,
        "loss_last10": last,
        "loss_fell": last < first,
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if not result["loss_fell"]:
        raise SystemExit("loss did not fall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--corpus", default=str(REPO / "mmsa_hf/data/moleculenet/bbbp.csv.gz"))
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--num_proc", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "benchmarks/gpu_batches"))
    r = sub.add_parser("run")
    r.add_argument("--batches", default=str(REPO / "benchmarks/gpu_batches"))
    r.add_argument("--preset", default="base")
    r.add_argument("--steps", type=int, default=200)
    r.add_argument("--warmup", type=int, default=10)
    r.add_argument("--lr", type=float, default=3e-4)
    r.add_argument("--mixed_precision", default="bf16")
    r.add_argument("--cpu", action="store_true")
    r.add_argument("--out", default=None)
    args = parser.parse_args()
    prepare(args) if args.command == "prepare" else run(args)


if __name__ == "__main__":
    main()
