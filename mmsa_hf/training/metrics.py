"""Property-prediction metrics (sklearn), with NaN-label masking and single-class task skipping."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import mean_absolute_error, mean_squared_error, roc_auc_score


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Mean ROC-AUC over the tasks that have both classes among their labelled rows.

    Args:
        labels: ``[N, T]`` 0/1 labels, NaN where missing.
        scores: ``[N, T]`` scores (logits or probabilities: ROC-AUC only uses the order).

    Returns:
        ``roc_auc`` (mean over evaluated tasks, NaN if none), ``per_task_roc_auc`` (None for a skipped
        task), ``num_tasks_evaluated`` and ``num_tasks_skipped``.
    """
    labels, scores = _as_2d(labels), _as_2d(scores)
    per_task: list[float | None] = []
    for t in range(labels.shape[1]):
        present = ~np.isnan(labels[:, t])
        y = labels[present, t]
        if y.size == 0 or np.unique(y).size < 2:
            per_task.append(None)
            continue
        per_task.append(float(roc_auc_score(y, scores[present, t])))
    evaluated = [v for v in per_task if v is not None]
    return {
        "roc_auc": float(np.mean(evaluated)) if evaluated else float("nan"),
        "per_task_roc_auc": per_task,
        "num_tasks_evaluated": len(evaluated),
        "num_tasks_skipped": len(per_task) - len(evaluated),
    }


def regression_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
    """RMSE and MAE per task and averaged over tasks, over the labelled (non-NaN) rows."""
    labels, predictions = _as_2d(labels), _as_2d(predictions)
    rmse, mae = [], []
    for t in range(labels.shape[1]):
        present = ~np.isnan(labels[:, t])
        if not present.any():
            rmse.append(None)
            mae.append(None)
            continue
        rmse.append(float(np.sqrt(mean_squared_error(labels[present, t], predictions[present, t]))))
        mae.append(float(mean_absolute_error(labels[present, t], predictions[present, t])))
    done = [v for v in rmse if v is not None]
    return {
        "rmse": float(np.mean(done)) if done else float("nan"),
        "mae": float(np.mean([v for v in mae if v is not None])) if done else float("nan"),
        "per_task_rmse": rmse,
        "per_task_mae": mae,
        "num_tasks_evaluated": len(done),
        "num_tasks_skipped": len(rmse) - len(done),
    }


def _as_2d(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    return array[:, None] if array.ndim == 1 else array


def paired_t_interval(treatment, control, confidence: float = 0.95) -> dict[str, Any]:
    """Mean paired difference ``treatment - control`` with a Student-t confidence interval.

    Pairs are matched by position (e.g. the same seed, split and data order). With ``n`` pairs,
    differences ``d``: ``mean(d) ± t_{(1+confidence)/2, n-1} · std(d, ddof=1) / sqrt(n)``.

    Returns:
        ``mean``, ``std`` (ddof=1), ``se``, ``n``, ``low``, ``high``, ``confidence``, ``t_critical`` and
        ``excludes_zero`` (the interval lies strictly above or below 0). With fewer than 2 pairs the
        interval is NaN and ``excludes_zero`` is False.
    """
    from scipy.stats import t as student_t

    diff = np.asarray(treatment, dtype=np.float64) - np.asarray(control, dtype=np.float64)
    if diff.ndim != 1:
        raise ValueError(f"paired_t_interval expects two 1-D sequences of equal length, got shape {diff.shape}")
    n = int(diff.size)
    mean = float(diff.mean()) if n else float("nan")
    if n < 2:
        return {"mean": mean, "std": float("nan"), "se": float("nan"), "n": n, "low": float("nan"),
                "high": float("nan"), "confidence": confidence, "t_critical": float("nan"), "excludes_zero": False}
    std = float(diff.std(ddof=1))
    se = std / np.sqrt(n)
    t_critical = float(student_t.ppf((1.0 + confidence) / 2.0, df=n - 1))
    low, high = mean - t_critical * se, mean + t_critical * se
    return {"mean": mean, "std": std, "se": float(se), "n": n, "low": float(low), "high": float(high),
            "confidence": confidence, "t_critical": t_critical, "excludes_zero": bool(low > 0 or high < 0)}
