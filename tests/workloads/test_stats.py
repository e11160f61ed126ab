"""Statistics on synthetic samples: a known 20% shift is found, identical samples are not, intervals
contain what they should, and the U test agrees with hand-computed values."""

import math

import numpy as np
import pytest

from workloads import stats


def noisy(center, n=15, scale=0.02, seed=0):
    return center * (1 + scale * np.random.default_rng(seed).standard_normal(n))


def test_spread_percentiles():
    assert stats.spread(range(1, 12), "x") == {"x_p10": 2.0, "x_p50": 6.0, "x_p90": 10.0}


def test_summary_fields_and_interval_around_the_median():
    x = noisy(100.0)
    s = stats.summary(x, "tokens_per_s")
    assert s["tokens_per_s"] == pytest.approx(float(np.median(x)))
    assert s["tokens_per_s_ci_low"] <= s["tokens_per_s"] <= s["tokens_per_s_ci_high"]
    assert s["tokens_per_s_ci_high"] - s["tokens_per_s_ci_low"] < 0.05 * s["tokens_per_s"]
    assert s["tokens_per_s_cv"] == pytest.approx(np.std(x, ddof=1) / np.mean(x)) and s["tokens_per_s_n"] == 15
    assert stats.summary([5.0], "t") == {"t": 5.0, "t_ci_low": 5.0, "t_ci_high": 5.0, "t_cv": 0.0, "t_n": 1}
    assert stats.median_ci(x) == stats.median_ci(x)  # seeded: the same samples give the same interval


def test_more_noise_wider_interval_and_half_width():
    quiet, loud = noisy(100.0, scale=0.01), noisy(100.0, scale=0.2)
    assert stats.ci_half_width(quiet) < 0.02 < stats.ci_half_width(loud)
    assert stats.ci_half_width([1.0, 2.0]) == math.inf  # too few to say


def test_a_20_percent_shift_is_found_and_identical_runs_are_not():
    base, slow = noisy(100.0, seed=1), noisy(80.0, seed=2)
    ratio, low, high = stats.ratio_ci(slow, base)
    assert ratio == pytest.approx(0.8, rel=0.03) and high < 1.0
    assert stats.mann_whitney_p(slow, base) < 0.001
    # over many pairs: a 5% test flags about 5% of identical pairs and nearly every shifted one
    pairs = [(noisy(100.0, seed=2 * i + 10), noisy(100.0, seed=2 * i + 11)) for i in range(60)]
    false_ci = sum(not (lo <= 1.0 <= hi) for _, lo, hi in (stats.ratio_ci(a, b) for a, b in pairs))
    false_u = sum(stats.mann_whitney_p(a, b) < 0.05 for a, b in pairs)
    assert false_ci <= 6 and false_u <= 6
    shifted = [(noisy(80.0, seed=2 * i + 10), b) for i, (_, b) in enumerate(pairs)]
    assert all(hi < 1.0 for _, _, hi in (stats.ratio_ci(a, b) for a, b in shifted))
    assert all(stats.mann_whitney_p(a, b) < 0.05 for a, b in shifted)


def test_mann_whitney_by_hand():
    # a = {1, 2, 3}, b = {4, 5, 6}: U = 0; mean 4.5, variance 3*3*7/12 = 5.25; z = (4.5 - 0.5) / sqrt(5.25)
    expected = math.erfc((4.5 - 0.5) / math.sqrt(5.25) / math.sqrt(2))
    assert stats.mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(expected)
    assert stats.mann_whitney_p([1, 2, 3], [3, 2, 1]) == pytest.approx(1.0)
    assert stats.mann_whitney_p([2, 2], [2, 2]) == 1.0 and stats.mann_whitney_p([], [1]) == 1.0
