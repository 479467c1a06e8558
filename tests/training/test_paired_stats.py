"""The paired difference interval against scipy.stats.ttest_rel and a numpy computation."""

import math

import numpy as np
import pytest
from scipy import stats

from mmsa_hf.training.metrics import paired_t_interval


def test_interval_matches_scipy_ttest_rel_and_numpy_on_a_hand_made_case():
    pretrained = [72.1, 70.4, 73.9, 71.2, 69.8]
    scratch = [70.0, 70.9, 71.1, 69.5, 68.2]
    result = paired_t_interval(pretrained, scratch)
    reference = stats.ttest_rel(pretrained, scratch).confidence_interval(confidence_level=0.95)
    assert result["low"] == pytest.approx(reference.low) and result["high"] == pytest.approx(reference.high)
    d = np.array(pretrained) - np.array(scratch)  # [2.1, -0.5, 2.8, 1.7, 1.6]
    half = 2.7764451051977987 * d.std(ddof=1) / math.sqrt(5)  # t_{0.975, 4}
    assert result["mean"] == pytest.approx(1.54)
    assert (result["low"], result["high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert result["n"] == 5 and result["excludes_zero"] == (result["low"] > 0)


def test_an_interval_around_zero_does_not_exclude_it_and_99_percent_is_wider():
    a, b = [1.0, 2.0, 3.0, 4.0], [1.5, 1.0, 3.5, 3.6]
    r95, r99 = paired_t_interval(a, b), paired_t_interval(a, b, confidence=0.99)
    assert r95["low"] < 0 < r95["high"] and not r95["excludes_zero"]
    assert r99["low"] < r95["low"] and r99["high"] > r95["high"]
    assert paired_t_interval([5.0, 6.0, 7.0], [1.0, 1.5, 2.0])["excludes_zero"]


def test_one_pair_gives_no_interval():
    result = paired_t_interval([1.0], [0.5])
    assert result["mean"] == pytest.approx(0.5) and math.isnan(result["low"]) and not result["excludes_zero"]
