"""Across-subject statistics: mean with a t-based 95% confidence interval, Kruskal–Wallis."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

#: Fewest values with a confidence interval: from two, t = 12.7 makes the interval wider than
#: the whole F1 range, so it would say nothing.
MIN_CI_VALUES = 3


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t confidence interval (NaN half-width for fewer than
    :data:`MIN_CI_VALUES` values).

    Subjects are few (10 in JAFFE), so the t distribution, not the normal, gives the interval.
    """
    array = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    mean = float(array.mean())
    if array.size < MIN_CI_VALUES:
        return mean, math.nan
    sem = float(stats.sem(array))
    return mean, float(stats.t.ppf(0.975, array.size - 1) * sem)


def kruskal_wallis(groups: dict[str, Sequence[float]]) -> dict[str, float] | None:
    """Kruskal–Wallis H test across class orders (groups of per-subject final F1).

    Returns ``None`` when fewer than two groups have values or all values are identical (the
    test is undefined then).
    """
    samples = [np.asarray(v, dtype=np.float64) for v in groups.values() if len(v) > 0]
    if len(samples) < 2:
        return None
    pooled = np.concatenate(samples)
    if np.all(pooled == pooled[0]):
        return None
    result = stats.kruskal(*samples)
    return {"H": float(result.statistic), "p": float(result.pvalue), "n_groups": len(samples)}
