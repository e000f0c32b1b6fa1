"""Statistics helpers shared by the samplers, the theory and the reports: exact binomial and
Student-t intervals. Importing them loads only numpy and scipy, no sampler."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta
from scipy.stats import t as student_t

CONFIDENCE = 0.95


def clopper_pearson(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval for a binomial rate."""
    if trials <= 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def mean_t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Mean of ``values`` and the half-width of its two-sided Student-t interval (nan for one value)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan
    return mean, float(
        student_t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    )
