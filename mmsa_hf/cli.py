"""The ``mmsa`` command line: ``pretrain``, ``finetune``, ``embed``, ``predict``, ``explain`` and ``push``.

``mmsa pretrain`` / ``mmsa finetune`` take the same options as ``scripts/pretrain.py`` /
``scripts/finetune.py`` (run those under ``accelerate launch`` for multi-GPU); ``mmsa pretrain --help`` /
``mmsa finetune --help`` print their options and examples.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

MAIN_EXAMPLES = """examples:
  mmsa pretrain --config small --output_dir runs/pretrain-small
  mmsa finetune --model runs/pretrain-small/final --dataset bbbp --seeds 0 1 2
  mmsa embed --model runs/pretrain-small/final --input molecules.csv --output emb.parquet
  mmsa predict --model runs/finetune/seed_0/best --input library.smi --output predictions.csv
  mmsa push --model runs/pretrain-small/final --repo-id my-org/mmsa-small
  mmsa explain --model runs/finetune/seed_0/best --smiles "O=[N+]([O-])c1ccccc1" --output explain/

run `mmsa COMMAND --help` for the options and examples of each command.
"""
EMBED_EXAMPLES = """examples:
  mmsa embed --model runs/pretrain-small/final --input molecules.csv --smiles-column smiles --output emb.parquet
  mmsa embed --model my-org/mmsa-small --input library.smi --output emb.npy --per-view
  mmsa embed --model DIR --input big.csv.gz --output emb.parquet --on-error skip --num-proc 8 --chunk-size 4096
  mmsa embed --model DIR --input molecules.csv --output emb.csv

output: row i of the output is input row i. A bad SMILES gives a NaN row with valid=False (--on-error mask,
the default), is left out (--on-error skip; the input_index column of a .parquet or .csv output, or
<stem>.indices.npy next to a .npy output, says which input rows were written) or stops the run (--on-error
raise). Every bad row is listed, with the reason, in <output>.report.json. A .csv output spreads the embedding
over embedding_0, embedding_1, ... columns. With --per-view, a .npy output gets <stem>.graph_embedding.npy,
<stem>.image_embedding.npy and <stem>.geometry_embedding.npy next to it. Only the views the model reads are
computed.

safe outputs: the output, its sidecars and the report are written to temporary names
(.<name>.partial-<pid>-<random>) in the output's folder, fsynced, and renamed to their final names only when
the run succeeds. On an error, Ctrl-C or SIGTERM the temporary files are removed, a file already at --output
is left untouched, one line says what happened and the exit status is non-zero (130 for SIGINT, 143 for
SIGTERM, 2 for an input or disk error). A .npy output is written front to back with its space reserved first
(posix_fallocate), so a full disk is a clean "No space left on device" error. The weights are checked against
the checkpoint's checksums.json (sha256) before use; a damaged file is named.
"""
PREDICT_EXAMPLES = """examples:
  mmsa predict --model runs/finetune/seed_0/best --input molecules.csv --output predictions.csv
  mmsa predict --model my-org/mmsa-bbbp --input library.smi --output predictions.parquet --batch-size 256

only the views the model reads are computed: a graph-only fine-tuned model (downstream_modalities ["graph"])
needs no 3D conformer and no image, so featurization is RDKit graph work only.

output (.csv, .parquet or .npy): one column per task (named after config.id2label when the checkpoint stores
the task names, else task_0, task_1, ...): probabilities for classification, values in label units for
regression. Bad rows are handled as in `mmsa embed` (see `mmsa embed --help`); the column names are also in
<output>.report.json.
"""
EXPLAIN_EXAMPLES = """examples:
  mmsa explain --model runs/finetune/seed_0/best --smiles "O=[N+]([O-])c1ccccc1" "CCO" --output explain/
  mmsa explain --model my-org/mmsa-tox21 --smiles "c1ccccc1N" --tasks NR-AR SR-p53 --output explain/ --size 600

per-atom attributions by occlusion of the atom input embeddings (mmsa_hf.explain; docs/method.md): for each
molecule i and task T, explain/mol<i>_<T>.png and .svg (RDKit similarity map: green raises the output, pink lowers
it), attributions.csv (one row per heavy atom in RDKit order, one column per task) and explanations.json
(predictions, attributions, errors). A bad SMILES is reported (valid=false) and skipped.
"""
PUSH_EXAMPLES = """examples:
  mmsa push --model runs/pretrain-small/final --repo-id my-org/mmsa-small
  mmsa push --model runs/finetune/seed_0/best --repo-id my-org/mmsa-bbbp --results runs/finetune/results.json --private
  mmsa push --model runs/pretrain-small/final --repo-id my-org/mmsa-small --revision dev --delete-stale-files

pushes ONE commit: model.safetensors, config.json (with auto_map) and the modeling code, the processor config
and code, and a generated README.md model card (from training_info.json in --model, and --results). The class
recorded in config.json's `architectures` is pushed (MMSAForPreTraining, MMSAModel or
MMSAForMolecularPropertyPrediction). The token comes from HF_TOKEN or `hf auth login`.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_inference_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint directory or Hub repo id")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit (Hub repos only)")
    parser.add_argument("--input", required=True,
                        help=".csv/.tsv (optionally .gz) or .parquet with a SMILES column, or .smi (one per line)")
    _add_flag(parser, "--smiles-column", default=None,
                        help="SMILES column of a table "
                             "(default: the first of smiles/SMILES/Smiles/mol/canonical_smiles)")
    parser.add_argument("--output", required=True, help="output .csv, .parquet or .npy file")
    _add_flag(parser, "--on-error", choices=["mask", "skip", "raise"], default="mask",
                        help="bad SMILES: mask (NaN row, valid=False; default), skip (row left out, indices saved) "
                             "or raise")
    _add_flag(parser, "--chunk-size", type=_positive_int, default=1024,
                        help="molecules read, featurized and written at a time (memory is flat in the input size)")
    _add_flag(parser, "--batch-size", type=_positive_int, default=128, help="molecules per model forward")
    _add_flag(parser, "--num-proc", type=_positive_int, default=None,
                        help="featurization processes (default: all available cores)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    _add_flag(parser, "--no-progress", action="store_true",
                        help="no progress bars (neither the run's nor the weight loading / download bars)")


def _add_training_commands(sub, formatter) -> None:
    """``mmsa pretrain`` / ``mmsa finetune``: the options of ``PretrainArguments`` / ``FinetuneArguments``
    (``HfArgumentParser``, the parsers of ``scripts/pretrain.py`` / ``scripts/finetune.py``)."""
    from .training import finetune, pretrain

    for name, module, summary in (("pretrain", pretrain, "self-supervised pretraining"),
                                  ("finetune", finetune, "fine-tuning and multi-seed evaluation")):
        options = module.build_parser(prog=f"mmsa {name}", add_help=False)
        sub.add_parser(name, parents=[options], help=summary, description=options.description,
                       epilog=options.epilog, formatter_class=formatter)


def _add_flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """``--a-flag``, also accepted as ``--a_flag`` (the training commands' spelling)."""
    spellings = [name] + (["--" + name[2:].replace("-", "_")] if "-" in name[2:] else [])
    parser.add_argument(*spellings, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The ``mmsa`` parser with its subcommands."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="mmsa", description="MMSA multi-modal molecular representations.",
                                     epilog=MAIN_EXAMPLES, formatter_class=formatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_training_commands(sub, formatter)
    embed = sub.add_parser("embed", help="write embeddings for a file of molecules",
                           description="Write the unified (and optionally per-view) MMSA embedding of every "
                                       "molecule of a file, streamed in chunks.",
                           epilog=EMBED_EXAMPLES, formatter_class=formatter)
    _add_inference_args(embed)
    _add_flag(embed, "--per-view", action="store_true",
                       help="also write the per-view (graph / image / geometry) embeddings")
    predict = sub.add_parser("predict", help="write property predictions of a fine-tuned model",
                             description="Predict the properties of every molecule of a file with a fine-tuned "
                                         "MMSAForMolecularPropertyPrediction checkpoint, streamed in chunks.",
                             epilog=PREDICT_EXAMPLES, formatter_class=formatter)
    _add_inference_args(predict)
    explain = sub.add_parser("explain", help="per-atom attributions of a property model, drawn on the molecules",
                             description="Which atoms drive each prediction of a fine-tuned "
                                         "MMSAForMolecularPropertyPrediction checkpoint: per-atom attributions "
                                         "drawn on the molecule (PNG + SVG) and written as CSV / JSON.",
                             epilog=EXPLAIN_EXAMPLES, formatter_class=formatter)
    explain.add_argument("--model", required=True, help="checkpoint directory or Hub repo id")
    explain.add_argument("--revision", default=None, help="Hub branch, tag or commit (Hub repos only)")
    explain.add_argument("--smiles", required=True, nargs="+", help="one or more SMILES")
    explain.add_argument("--output", required=True, help="output directory")
    explain.add_argument("--tasks", nargs="+", default=None, help="task names (config.id2label; default: all)")
    explain.add_argument("--size", type=_positive_int, default=400, help="picture side in pixels")
    push = sub.add_parser("push", help="push a checkpoint + processor + generated model card to the Hub",
                          description="Push a saved checkpoint with its processor and a generated model card to "
                                      "the Hugging Face Hub in one commit.",
                          epilog=PUSH_EXAMPLES, formatter_class=formatter)
    push.add_argument("--model", required=True, help="local checkpoint directory (saved with its processor)")
    _add_flag(push, "--repo-id", required=True, help="namespace/name of the Hub repo (created if missing)")
    push.add_argument("--revision", default=None, help="branch to push to (created from main if missing)")
    push.add_argument("--private", action="store_true", help="create the repo private (if it does not exist)")
    _add_flag(push, "--commit-message", default=None)
    push.add_argument("--results", default=None,
                      help="fine-tuning results.json for the model card (default: results.json in --model, if any)")
    _add_flag(push, "--delete-stale-files", action="store_true",
                      help="delete files of the branch that this upload no longer produces (same commit)")
    return parser


def _fail(command: str, message: str) -> int:
    print(f"mmsa {command}: error: {message}", file=sys.stderr)
    return 2


def _interrupted(command: str, err, output: str | None) -> int:
    kept = f"; nothing was written to {output} (an earlier file there is untouched)" if output else ""
    print(f"mmsa {command}: interrupted by {err.signal_name}{kept}", file=sys.stderr)
    return err.exit_code


def _run_inference(args) -> int:
    from .inference import run_inference

    if args.no_progress:  # no bar at all: neither ours nor the "Loading weights" / download bars
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as transformers_logging

        disable_progress_bars()
        transformers_logging.disable_progress_bar()

    report = run_inference(
        args.model, args.input, args.output, mode=args.command, smiles_column=args.smiles_column,
        chunk_size=args.chunk_size, batch_size=args.batch_size, num_proc=args.num_proc,
        on_error=args.on_error, per_view=getattr(args, "per_view", False), revision=args.revision,
        device=args.device, show_progress=not args.no_progress,
    )
    summary = {k: report[k] for k in ("rows", "rows_written", "bad_rows", "on_error", "columns", "files",
                                      "featurize_seconds", "model_seconds", "wall_seconds", "molecules_per_s")}
    if report["bad_rows"]:
        summary["bad_indices"] = (report["masked_indices"] or report["skipped_indices"])[:20]
    print(json.dumps(summary, indent=2))
    return 0


def _run_explain(args) -> int:
    from .explain import explain
    from .inference import load_for_inference

    model, processor, _ = load_for_inference(args.model, mode="predict", revision=args.revision)
    try:
        explanations = explain(model, args.smiles, args.output, processor=processor, tasks=args.tasks,
                               size=args.size)
    except ValueError as err:  # e.g. a task the model does not have
        return _fail("explain", str(err))
    invalid = [{"index": i, "smiles": e.smiles, "error": e.error} for i, e in enumerate(explanations) if not e.valid]
    summary = {"output": args.output, "molecules": len(explanations), "valid": len(explanations) - len(invalid),
               "tasks": next((list(e.attributions) for e in explanations if e.valid), []), "invalid": invalid,
               "files": [f for e in explanations for f in e.files]}
    print(json.dumps(summary, indent=2))
    return 0


def _run_push(args) -> int:
    from . import modeling
    from .hub import DEFAULT_COMMIT_MESSAGE, load_model, load_processor, push_to_hub
    from .inference import InferenceInputError

    directory = Path(args.model)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist (mmsa push takes a local "
                                "directory saved with save_pretrained)")
    config_path = directory / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"no config.json in {directory}: not a saved MMSA checkpoint")
    architectures = json.loads(config_path.read_text()).get("architectures") or ["MMSAModel"]
    architecture = RENAMED_CLASSES.get(architectures[0], architectures[0])
    known = {"MMSAModel", "MMSAForPreTraining", "MMSAForMolecularPropertyPrediction"}
    if architecture not in known:
        raise UserError(f"{config_path}: architectures={architectures}; expected one of {sorted(known)}")
    model_class = getattr(modeling, architecture)
    model = load_model(directory, model_class=model_class)
    if not (directory / "processor_config.json").exists():
        raise FileNotFoundError(f"no processor_config.json in {directory}: save the processor next to the model "
                                "(processor.save_pretrained(DIR)) so that the pushed repo can featurize molecules")
    processor = load_processor(directory)

    def read_json(path: Path, what: str):
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{what} {path} not found") from None
        except json.JSONDecodeError as err:
            raise InferenceInputError(f"{what} {path} is not valid JSON: {err}") from None

    info = read_json(directory / "training_info.json", "training info") \
        if (directory / "training_info.json").exists() else None
    if args.results:
        results = read_json(Path(args.results), "--results")
    elif (directory / "results.json").exists():
        results = read_json(directory / "results.json", "results")
    else:
        results = None
    commit = push_to_hub(
        model, processor, args.repo_id, revision=args.revision, private=True if args.private else None,
        commit_message=args.commit_message or DEFAULT_COMMIT_MESSAGE, training_info=info, results=results,
        delete_stale_files=args.delete_stale_files,
    )
    print(json.dumps({"repo_id": args.repo_id, "revision": args.revision or "main", "class": type(model).__name__,
                      "commit": getattr(commit, "oid", None), "commit_url": getattr(commit, "commit_url", None)},
                     indent=2))
    return 0


class UserError(Exception):
    """A command stopped on its input or options: one line on stderr, exit status 2."""


#: class names of checkpoints saved before a rename -> the current class
RENAMED_CLASSES = {"MMSAForPretraining": "MMSAForPreTraining"}


def _run_training(args) -> int:
    """``mmsa pretrain`` / ``mmsa finetune``: a bad option or input is one line and exit 2 (the traceback with
    ``MMSA_DEBUG=1``); anything else propagates."""
    import os

    from .training import finetune, pretrain

    module = pretrain if args.command == "pretrain" else finetune
    run = pretrain.run_pretraining if args.command == "pretrain" else finetune.run_finetuning
    try:
        run(module.arguments_from_namespace(args))
    except (ValueError, KeyError) as err:
        if os.environ.get("MMSA_DEBUG"):
            raise
        raise UserError(err.args[0] if isinstance(err, KeyError) and err.args else str(err)) from None
    return 0


COMMANDS = {"pretrain": _run_training, "finetune": _run_training, "embed": _run_inference,
            "predict": _run_inference, "push": _run_push, "explain": _run_explain}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mmsa`` command line; returns the exit status (2 for a usage or input error)."""
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]  # os.PathLike arguments welcome
    args = build_parser().parse_args(argv)
    from .atomic import Interrupted, signals_as_exceptions
    from .inference import InferenceInputError

    try:
        with signals_as_exceptions():  # SIGINT / SIGTERM: temporary files removed, one line, exit 128 + signal
            return COMMANDS[args.command](args)
    except Interrupted as err:
        return _interrupted(args.command, err, getattr(args, "output", None))
    except (InferenceInputError, FileNotFoundError) as err:
        return _fail(args.command, str(err))
    except OSError as err:  # Hub errors (repo / revision not found, offline), corrupt checkpoints, permissions
        return _fail(args.command, f"{type(err).__name__}: {err}")
    except UserError as err:
        return _fail(args.command, str(err))
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
