"""The ``mmsa`` command line: ``pretrain``, ``finetune``, ``embed``, ``predict`` and ``push``.

``mmsa pretrain`` / ``mmsa finetune`` take the same options as ``scripts/pretrain.py`` /
``scripts/finetune.py`` (run them under ``accelerate launch`` for multi-GPU).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

EMBED_EXAMPLES = """examples:
  mmsa embed --model runs/pretrain-small/final --input molecules.csv --smiles-column smiles --output emb.parquet
  mmsa embed --model my-org/mmsa-small --input library.smi --output emb.npy --per-view
  mmsa embed --model DIR --input big.csv.gz --output emb.parquet --on-error skip --num-proc 8
"""
PREDICT_EXAMPLES = """examples:
  mmsa predict --model runs/finetune/seed_0/best --input molecules.csv --output predictions.parquet
  mmsa predict --model my-org/mmsa-bbbp --input library.smi --output predictions.npy
"""
PUSH_EXAMPLES = """examples:
  mmsa push --model runs/pretrain-small/final --repo-id my-org/mmsa-small
  mmsa push --model runs/finetune/seed_0/best --repo-id my-org/mmsa-bbbp --results runs/finetune/results.json --private
"""


def _add_inference_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint directory or Hub repo id")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    parser.add_argument("--input", required=True, help=".csv/.csv.gz/.tsv/.parquet with a SMILES column, or .smi")
    parser.add_argument("--smiles-column", default=None, help="default: smiles/SMILES/mol, whichever exists")
    parser.add_argument("--output", required=True, help="output .parquet or .npy")
    parser.add_argument("--on-error", choices=["mask", "skip", "raise"], default="mask",
                        help="bad SMILES: mask (NaN row, default), skip (row left out, indices saved) or raise")
    parser.add_argument("--chunk-size", type=int, default=1024, help="molecules read and featurized at a time")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-proc", type=int, default=None, help="featurization processes (default: all cores)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def build_parser() -> argparse.ArgumentParser:
    """The ``mmsa`` parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="mmsa", description="MMSA multi-modal molecular representations.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pretrain", help="self-supervised pretraining (see --help)", add_help=False)
    sub.add_parser("finetune", help="fine-tuning and multi-seed evaluation (see --help)", add_help=False)
    embed = sub.add_parser("embed", help="write embeddings for a file of molecules", epilog=EMBED_EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_inference_args(embed)
    embed.add_argument("--per-view", action="store_true", help="also write the per-view (graph/image/3D) embeddings")
    predict = sub.add_parser("predict", help="write property predictions of a fine-tuned model",
                             epilog=PREDICT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_inference_args(predict)
    push = sub.add_parser("push", help="push a checkpoint + processor + generated model card to the Hub",
                          epilog=PUSH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    push.add_argument("--model", required=True, help="local checkpoint directory (with the processor)")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--commit-message", default=None)
    push.add_argument("--results", default=None, help="fine-tuning results.json to put in the model card")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mmsa`` command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "pretrain":
        from .training.pretrain import main as pretrain_main

        pretrain_main(argv[1:])
        return 0
    if argv and argv[0] == "finetune":
        from .training.finetune import main as finetune_main

        finetune_main(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    if args.command in ("embed", "predict"):
        from .inference import run_inference

        report = run_inference(
            args.model, args.input, args.output, mode=args.command, smiles_column=args.smiles_column,
            chunk_size=args.chunk_size, batch_size=args.batch_size, num_proc=args.num_proc,
            on_error=args.on_error, per_view=getattr(args, "per_view", False), revision=args.revision,
            device=args.device,
        )
        summary = {k: v for k, v in report.items() if k != "bad_row_details"}
        print(json.dumps(summary, indent=2))
        return 0
    if args.command == "push":
        from transformers import AutoModel, AutoProcessor

        from .hub import load_model, push_to_hub

        model = load_model(args.model)
        processor = AutoProcessor.from_pretrained(args.model)
        results = json.loads(open(args.results).read()) if args.results else None
        info = None
        try:
            info = json.loads(open(f"{args.model}/training_info.json").read())
        except FileNotFoundError:
            pass
        commit = push_to_hub(model, processor, args.repo_id, revision=args.revision, private=args.private,
                             commit_message=args.commit_message, training_info=info, results=results)
        print(f"pushed {args.model} to {args.repo_id}: {commit}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
