"""Statistics over seeds, the benchmark's unit of replication (benchmarks/PROTOCOL.md, section "Analysis").

A run's score is one number (mean Dice over the test cases); two methods are
compared by their per-seed differences. Test cases are never treated as
independent replicates.
"""
import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 10000
BOOTSTRAP_SEED = 0  # the report is the same every time it is made


@dataclass(frozen=True)
class PairedSummary:
    n: int
    mean: float
    sd: float  # of the per-seed differences (ddof=1); nan with one seed
    ci95_t: tuple  # mean +- t(0.975, n-1) * sd / sqrt(n)
    ci90_t: tuple  # the decision rule's interval (lower bound > 0 over >= 8 seeds changes a default)
    ci95_bootstrap: tuple  # percentile interval of the mean over seeds resampled with replacement
    p_t: float  # paired t-test over seeds, two-sided
    p_wilcoxon: float  # Wilcoxon signed-rank over seeds, two-sided (exact for small n)

    def as_dict(self) -> dict:
        return asdict(self)


def t_interval(values: np.ndarray, level: float) -> tuple:
    n = len(values)
    if n < 2:
        return (math.nan, math.nan)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return (float(values.mean() - half), float(values.mean() + half))


def bootstrap_interval(values: np.ndarray, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple:
    if len(values) < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    return (float(np.quantile(means, 0.5 - level / 2)), float(np.quantile(means, 0.5 + level / 2)))


def paired_summary(differences: Sequence[float]) -> PairedSummary:
    """Mean, intervals and tests of per-seed differences (method - reference, one value per seed)."""
    d = np.asarray([x for x in differences if not math.isnan(x)], dtype=float)
    n = len(d)
    if n == 0:
        raise ValueError("no paired seeds")
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    p_t = float(stats.ttest_1samp(d, 0.0).pvalue) if n > 1 and sd > 0 else math.nan
    p_w = float(stats.wilcoxon(d).pvalue) if n > 1 and np.any(d != 0) else math.nan
    return PairedSummary(n=n, mean=float(d.mean()), sd=sd, ci95_t=t_interval(d, 0.95), ci90_t=t_interval(d, 0.90),
                         ci95_bootstrap=bootstrap_interval(d), p_t=p_t, p_wilcoxon=p_w)


def paired_differences(scores: Dict[int, float], reference: Dict[int, float]) -> Dict[int, float]:
    """{seed: method - reference} over the seeds both have."""
    return {s: scores[s] - reference[s] for s in sorted(set(scores) & set(reference))}


def gap_closure(method: Dict[int, float], lower: Dict[int, float], upper: Dict[int, float],
                min_gap: float) -> Dict[int, float]:
    """{seed: (method - lower) / (upper - lower)} over seeds with all three and a gap of at least ``min_gap``."""
    out = {}
    for s in sorted(set(method) & set(lower) & set(upper)):
        gap = upper[s] - lower[s]
        if gap >= min_gap:
            out[s] = (method[s] - lower[s]) / gap
    return out


def seeds_for_power(sd: float, delta: float, power: float = 0.8, alpha: float = 0.05) -> Optional[int]:
    """Seeds a two-sided paired t-test needs to detect a true mean difference ``delta`` with ``power``."""
    if not sd > 0:
        return None
    for n in range(2, 10000):
        if achieved_power(sd, delta, n, alpha) >= power:
            return n
    return None


def achieved_power(sd: float, delta: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test with n seeds (noncentral t)."""
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    noncentrality = delta / (sd / math.sqrt(n))
    return float(1 - stats.nct.cdf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality))


def detectable_difference(sd: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest true mean difference the paired t-test over n seeds detects with ``power``."""
    if n < 2 or not sd > 0:
        return math.nan
    low, high = 0.0, 100.0 * sd
    for _ in range(100):  # bisection on the monotone power curve
        mid = (low + high) / 2
        low, high = (mid, high) if achieved_power(sd, mid, n, alpha) < power else (low, mid)
    return high
