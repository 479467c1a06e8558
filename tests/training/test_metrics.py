"""The metric code against sklearn on hand-made cases."""

import math

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, roc_auc_score

from mmsa_hf.training.metrics import classification_metrics, regression_metrics


def test_nan_labels_are_masked_per_task():
    labels = np.array([[1, 0], [0, np.nan], [1, 1], [0, 0], [np.nan, 1]], dtype=float)
    scores = np.array([[0.9, 0.2], [0.3, 0.99], [0.4, 0.8], [0.5, 0.1], [0.0, 0.7]])
    result = classification_metrics(labels, scores)
    task0 = roc_auc_score([1, 0, 1, 0], [0.9, 0.3, 0.4, 0.5])
    task1 = roc_auc_score([0, 1, 0, 1], [0.2, 0.8, 0.1, 0.7])
    assert result["per_task_roc_auc"] == pytest.approx([task0, task1])
    assert result["roc_auc"] == pytest.approx((task0 + task1) / 2)
    assert result["num_tasks_skipped"] == 0


def test_single_class_task_is_skipped_and_counted():
    labels = np.array([[1, 1, np.nan], [0, 1, np.nan], [1, 1, 1], [0, 1, np.nan]], dtype=float)
    scores = np.array([[0.8, 0.1, 0.5], [0.1, 0.2, 0.5], [0.6, 0.3, 0.5], [0.7, 0.4, 0.5]])
    result = classification_metrics(labels, scores)
    assert result["per_task_roc_auc"][1] is None and result["per_task_roc_auc"][2] is None
    assert result["num_tasks_skipped"] == 2 and result["num_tasks_evaluated"] == 1
    assert result["roc_auc"] == pytest.approx(roc_auc_score([1, 0, 1, 0], [0.8, 0.1, 0.6, 0.7]))


def test_no_evaluable_task_gives_nan_not_a_number():
    result = classification_metrics(np.ones((3, 1)), np.zeros((3, 1)))
    assert math.isnan(result["roc_auc"]) and result["num_tasks_skipped"] == 1


def test_regression_metrics_match_sklearn_with_missing_labels():
    labels = np.array([[1.0, 2.0], [np.nan, 0.5], [3.0, -1.0]])
    preds = np.array([[1.5, 1.0], [9.0, 0.0], [2.0, -2.0]])
    result = regression_metrics(labels, preds)
    rmse0 = math.sqrt(mean_squared_error([1.0, 3.0], [1.5, 2.0]))
    rmse1 = math.sqrt(mean_squared_error([2.0, 0.5, -1.0], [1.0, 0.0, -2.0]))
    assert result["per_task_rmse"] == pytest.approx([rmse0, rmse1])
    assert result["rmse"] == pytest.approx((rmse0 + rmse1) / 2)
    assert result["per_task_mae"][0] == pytest.approx(mean_absolute_error([1.0, 3.0], [1.5, 2.0]))
