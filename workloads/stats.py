"""Statistics of repeated measurements: spread, confidence intervals, variation, and tests of a change.

A benchmark on a shared machine is a sample, not a number. Every timed metric
is reported as its median with the p10/p50/p90 spread, the coefficient of
variation and a 95% confidence interval of the median (percentile bootstrap, as
pytest-benchmark and hyperfine report intervals); two samples are compared by
the bootstrap interval of the ratio of their medians and the Mann-Whitney U
test. Resampling uses a fixed seed, so the same samples always give the same
interval. Pure numpy: nothing here knows what was measured.
"""

from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0x5EED


def spread(values, prefix: str) -> dict[str, float]:
    """p10/p50/p90 of ``values`` as ``{prefix}_p10`` ... (linear interpolation)."""
    p10, p50, p90 = np.percentile(np.asarray(values, dtype=float), [10, 50, 90])
    return {f"{prefix}_p10": float(p10), f"{prefix}_p50": float(p50), f"{prefix}_p90": float(p90)}


def cv(values) -> float:
    """Coefficient of variation: sample standard deviation over the mean (0 for fewer than 2 values)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2 or x.mean() == 0:
        return 0.0
    return float(x.std(ddof=1) / abs(x.mean()))


def _medians(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.median(x[rng.integers(0, len(x), size=(RESAMPLES, len(x)))], axis=1)


def median_ci(values, level: float = LEVEL) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median; a single value is its own interval."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x[0]), float(x[0])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(_medians(x, np.random.default_rng(SEED)), [tail, 100 - tail])
    return float(low), float(high)


def summary(values, prefix: str) -> dict[str, float]:
    """The median and everything the record keeps about its uncertainty: ``{prefix}``,
    ``{prefix}_ci_low``/``_ci_high`` (95% CI of the median), ``{prefix}_cv`` and ``{prefix}_n``."""
    low, high = median_ci(values)
    return {prefix: float(np.median(np.asarray(values, dtype=float))), f"{prefix}_ci_low": low,
            f"{prefix}_ci_high": high, f"{prefix}_cv": cv(values), f"{prefix}_n": len(values)}


def ci_half_width(values) -> float:
    """Half the 95% CI of the median, relative to the median (inf for fewer than 3 values)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 3 or np.median(x) == 0:
        return math.inf
    low, high = median_ci(x)
    return (high - low) / 2 / abs(float(np.median(x)))


def ratio_ci(new, base, level: float = LEVEL) -> tuple[float, float, float]:
    """(ratio, low, high): median(new) / median(base) and its percentile-bootstrap interval, each
    sample resampled on its own."""
    a, b = np.asarray(new, dtype=float), np.asarray(base, dtype=float)
    ratio = float(np.median(a) / np.median(b))
    if len(a) < 2 or len(b) < 2:
        return ratio, ratio, ratio
    rng = np.random.default_rng(SEED)
    ratios = _medians(a, rng) / _medians(b, rng)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return ratio, float(low), float(high)


def mann_whitney_p(a, b) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation with tie correction and
    continuity correction); 1.0 when either side has no values or everything ties."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = len(x), len(y)
    if not n1 or not n2:
        return 1.0
    both = np.concatenate([x, y])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    values, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    ranks = np.array([ranks[inverse == i].mean() for i in range(len(values))])[inverse]  # ties share a rank
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - (counts**3 - counts).sum() / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = (abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(variance)
    return float(math.erfc(max(z, 0.0) / math.sqrt(2)))
