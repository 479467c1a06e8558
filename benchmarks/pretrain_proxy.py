#!/usr/bin/env python
"""Pretraining-time proxy: a linear probe on frozen GIN features, scored on the VALIDATION splits only.

Used to choose between pretraining objectives without ever reading a test split (issue: objectives that
transfer). For every checkpoint, and for randomly initialised GINs of the same architecture (the control that
Sun et al. 2022 say short pretraining often fails to beat), it

1. embeds the train and validation molecules of BBBP, BACE, ClinTox, SIDER and Tox21 (reference scaffold split)
   with the frozen graph encoder (mean-pooled GIN output, graph-only featurization, no conformers);
2. fits a standardised L2 logistic regression per task on the training split (fixed C, nothing tuned);
3. reports validation ROC-AUC × 100 per set and the 5-set average.

    python benchmarks/pretrain_proxy.py --checkpoints mmsa=runs/a/final masked=runs/b/final --random_seeds 0 1 2

Writes ``benchmarks/results/pretrain_proxy.{json,md}`` (``--output`` to change). One torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from mmsa_hf.atomic import write_text_atomic  # results are never half-written

DATASETS = ["bbbp", "bace", "clintox", "sider", "tox21"]
RESULTS = Path(__file__).resolve().parent / "results"


def load_probe_sets(datasets: list[str]) -> dict[str, dict]:
    """Graph tensors and labels of the train/validation splits (the test split is never loaded)."""
    from mmsa_hf.training.common import build_processor
    from mmsa_hf.training.finetune import featurize_splits, load_task
    from mmsa_hf.training.graph_batches import GraphTensorSet

    processor = build_processor(image_size=128, views=("graph",))
    sets = {}
    for name in datasets:
        dsd, task = load_task(name)
        splits = {split: dsd[split] for split in ("train", "validation")}
        featurized, _ = featurize_splits(splits, processor)
        sets[name] = {split: GraphTensorSet.from_featurized(ds, task["label_columns"]) for split, ds in featurized.items()}
    return sets


def embed(model, data, batch_size: int = 512) -> np.ndarray:
    """``[M, F]`` mean-pooled GIN output of every molecule of ``data``, in order."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = data.batch(torch.arange(start, min(start + batch_size, len(data))))
            batch.pop("labels", None)
            output = model(**batch, modalities=["graph"], encoders_only=True)
            out.append(output.graph_pooled_output.float().numpy())
    return np.concatenate(out)


def probe_auc(train_x, train_y, val_x, val_y, C: float = 0.1) -> float:
    """Mean validation ROC-AUC over the tasks with both classes present in train and validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    train_x, val_x = scaler.transform(train_x), scaler.transform(val_x)
    aucs = []
    for t in range(train_y.shape[1]):
        tr, va = ~np.isnan(train_y[:, t]), ~np.isnan(val_y[:, t])
        if len(np.unique(train_y[tr, t])) < 2 or len(np.unique(val_y[va, t])) < 2:
            continue
        clf = LogisticRegression(C=C, max_iter=2000).fit(train_x[tr], train_y[tr, t])
        aucs.append(roc_auc_score(val_y[va, t], clf.decision_function(val_x[va])))
    return float(np.mean(aucs))


def probe_model(model, sets: dict[str, dict]) -> dict[str, float]:
    model.eval()
    scores = {}
    for name, splits in sets.items():
        train, val = splits["train"], splits["validation"]
        scores[name] = 100 * probe_auc(embed(model, train), train.labels.numpy(), embed(model, val), val.labels.numpy())
    scores["average"] = float(np.mean([scores[n] for n in sets]))
    return scores


def load_backbone(path: str):
    from mmsa_hf.modeling import MMSAModel

    return MMSAModel.from_pretrained(path)


def random_backbone(config, seed: int):
    import torch

    from mmsa_hf.modeling import MMSAModel

    torch.manual_seed(seed)
    return MMSAModel(config)


def markdown(results: dict) -> str:
    names = results["datasets"]
    lines = ["| model | " + " | ".join(names) + " | average |", "|---" * (len(names) + 2) + "|"]
    for row, scores in results["rows"].items():
        lines.append(f"| {row} | " + " | ".join(f"{scores[n]:.2f}" for n in names) + f" | **{scores['average']:.2f}** |")
    return (
        "# Linear probe on frozen GIN features (validation ROC-AUC × 100)\n\n"
        "Pretraining-time proxy for choosing objectives: standardised L2 logistic regression (C = "
        f"{results['C']}) on the training split, scored on the validation split of the reference scaffold split. "
        "Test splits are never loaded.\n\n" + "\n".join(lines) + "\n\n" + results.get("notes", "") + "\n"
    )


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="*", default=[], help="name=path pairs of pretrained backbones")
    parser.add_argument("--random_seeds", type=int, nargs="*", default=[0, 1, 2], help="random-init controls")
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--output", default=str(RESULTS / "pretrain_proxy"))
    parser.add_argument("--notes", default="")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    start = time.time()
    sets = load_probe_sets(args.datasets)
    rows, config = {}, None
    for item in args.checkpoints:
        name, path = item.split("=", 1)
        model = load_backbone(path)
        config = config or model.config
        rows[name] = probe_model(model, sets)
        print(name, json.dumps(rows[name]), flush=True)
    for seed in args.random_seeds:
        rows[f"random init (seed {seed})"] = probe_model(random_backbone(config or _small_config(), seed), sets)
        print("random", seed, json.dumps(rows[f"random init (seed {seed})"]), flush=True)
    results = {"datasets": args.datasets, "C": 0.1, "rows": rows, "checkpoints": args.checkpoints,
               "wall_seconds": time.time() - start, "notes": args.notes}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out.with_suffix(".json"), json.dumps(results, indent=2))
    write_text_atomic(out.with_suffix(".md"), markdown(results))
    print(markdown(results))


def _small_config():
    from mmsa_hf.modeling import MMSAConfig

    return MMSAConfig.from_preset("small")


if __name__ == "__main__":
    main()
