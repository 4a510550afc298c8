"""The tests and intervals of an A/B readout: Wilson, t, two proportions, Welch, bootstrap, Holm, SRM.

Every difference is treatment minus control (B - A) with a two-sided p-value, and a relative lift
B / A - 1 with its own interval. Two proportions: the p-value is the pooled two-proportion z-test (the
textbook test, the one the sample-size formula assumes); the interval is Newcombe's hybrid score
interval (built from the two Wilson intervals), which keeps its coverage at e-commerce rates of a few
per cent where the unpooled Wald interval runs short. Means: Welch's t-test and interval (unequal
variances, Welch-Satterthwaite degrees of freedom), or a percentile bootstrap of whole units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

BOOTSTRAP_CELLS = 1 << 22  # resampled values held at once (bounds the bootstrap's memory)


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class Summary:
    """Count, mean and (n - 1) variance of one arm's per-unit values."""

    n: int
    mean: float
    var: float

    @classmethod
    def of(cls, values: np.ndarray) -> Summary:
        v = np.asarray(values, dtype=np.float64)
        return cls(
            int(v.size),
            float(v.mean()) if v.size else math.nan,
            float(v.var(ddof=1)) if v.size > 1 else math.nan,
        )


@dataclass(frozen=True)
class Difference:
    """Treatment minus control with its interval and two-sided p-value; the relative lift too."""

    control: float
    treatment: float
    diff: float
    low: float
    high: float
    p_value: float
    relative: float
    relative_low: float
    relative_high: float
    method: str

    def significant(self, alpha: float) -> bool:
        return bool(self.p_value < alpha)


def z_quantile(alpha: float) -> float:
    """The two-sided normal critical value z_{1 - alpha/2} (scipy.special: stats.norm is 100x slower)."""
    return float(special.ndtri(1.0 - alpha / 2.0))


def wilson(successes: int, n: int, alpha: float = 0.05) -> Interval:
    """The rate ``successes / n`` with its Wilson score interval."""
    if n <= 0:
        return Interval(math.nan, math.nan, math.nan)
    z = z_quantile(alpha)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(summary: Summary, alpha: float = 0.05) -> Interval:
    """The mean with its Student t interval (n - 1 degrees of freedom)."""
    if summary.n < 2:
        return Interval(summary.mean, math.nan, math.nan)
    half = float(special.stdtrit(summary.n - 1, 1 - alpha / 2)) * math.sqrt(summary.var / summary.n)
    return Interval(summary.mean, summary.mean - half, summary.mean + half)


def two_proportions(
    x_control: int, n_control: int, x_treatment: int, n_treatment: int, alpha: float = 0.05
) -> Difference:
    """Pooled two-proportion z-test p-value, Newcombe hybrid score interval, Katz log interval of B/A."""
    a, b = wilson(x_control, n_control, alpha), wilson(x_treatment, n_treatment, alpha)
    pa, pb = a.estimate, b.estimate
    diff = pb - pa
    low = diff - math.sqrt((pb - b.low) ** 2 + (a.high - pa) ** 2)
    high = diff + math.sqrt((b.high - pb) ** 2 + (pa - a.low) ** 2)
    pooled = (x_control + x_treatment) / (n_control + n_treatment)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_treatment))
    p_value = float(2 * special.ndtr(-abs(diff) / se0)) if se0 > 0 else 1.0
    relative, rel_low, rel_high = math.nan, math.nan, math.nan
    if x_control > 0 and x_treatment > 0:
        relative = pb / pa - 1
        se_log = math.sqrt((1 - pa) / x_control + (1 - pb) / x_treatment)
        z = z_quantile(alpha)
        rel_low, rel_high = (pb / pa) * math.exp(-z * se_log) - 1, (pb / pa) * math.exp(z * se_log) - 1
    method = "pooled two-proportion z-test; Newcombe hybrid score interval"
    return Difference(pa, pb, diff, low, high, p_value, relative, rel_low, rel_high, method)


def wald_interval(
    x_control: int, n_control: int, x_treatment: int, n_treatment: int, alpha: float = 0.05
) -> Interval:
    """The unpooled Wald interval of B - A (for reference: it undercovers at small rates)."""
    pa, pb = x_control / n_control, x_treatment / n_treatment
    se = math.sqrt(pa * (1 - pa) / n_control + pb * (1 - pb) / n_treatment)
    half = z_quantile(alpha) * se
    return Interval(pb - pa, pb - pa - half, pb - pa + half)


def welch(control: Summary, treatment: Summary, alpha: float = 0.05) -> Difference:
    """Welch's t-test and interval of the difference of means; delta-method interval of B/A - 1."""
    va, vb = control.var / control.n, treatment.var / treatment.n
    diff = treatment.mean - control.mean
    se = math.sqrt(va + vb) if control.n > 1 and treatment.n > 1 else math.nan
    nan = (control.mean, treatment.mean, diff, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    if not se > 0:
        return Difference(*nan, method="Welch t-test (undefined: no variance)")
    df = (va + vb) ** 2 / (va**2 / (control.n - 1) + vb**2 / (treatment.n - 1))
    t_crit = float(special.stdtrit(df, 1 - alpha / 2))
    p_value = float(2 * special.stdtr(df, -abs(diff) / se))
    relative, rel_low, rel_high = math.nan, math.nan, math.nan
    if control.mean != 0:
        ratio = treatment.mean / control.mean
        se_ratio = math.sqrt(vb + ratio**2 * va) / abs(control.mean)  # delta method
        relative, rel_low, rel_high = ratio - 1, ratio - 1 - t_crit * se_ratio, ratio - 1 + t_crit * se_ratio
    return Difference(
        control.mean, treatment.mean, diff, diff - t_crit * se, diff + t_crit * se, p_value,
        relative, rel_low, rel_high, f"Welch t-test (df {df:.0f})",
    )  # fmt: skip


def bootstrap_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``resamples`` resamples (with replacement) of ``values``, in chunks that bound memory."""
    v = np.asarray(values, dtype=np.float64)
    out = np.empty(resamples)
    chunk = max(1, BOOTSTRAP_CELLS // max(v.size, 1))
    for lo in range(0, resamples, chunk):
        rows = min(chunk, resamples - lo)
        out[lo : lo + rows] = v[rng.integers(0, v.size, size=(rows, v.size))].mean(axis=1)
    return out


def bootstrap(
    control: np.ndarray, treatment: np.ndarray, resamples: int, alpha: float = 0.05, seed: int = 0
) -> Difference:
    """Percentile bootstrap of B - A and B/A - 1 over whole units; p = 2 min(P*(d <= 0), P*(d >= 0))."""
    rng = np.random.default_rng(seed)
    a, b = bootstrap_means(control, resamples, rng), bootstrap_means(treatment, resamples, rng)
    d = b - a
    lo_q, hi_q = alpha / 2, 1 - alpha / 2
    tail = min(np.count_nonzero(d <= 0), np.count_nonzero(d >= 0))
    p_value = min(1.0, 2 * (tail + 1) / (resamples + 1))
    ca, cb = float(np.mean(control)), float(np.mean(treatment))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = b / a - 1
    ratio = ratio[np.isfinite(ratio)]
    rel = np.quantile(ratio, [lo_q, hi_q]) if ratio.size else (math.nan, math.nan)
    return Difference(
        ca, cb, cb - ca, *map(float, np.quantile(d, [lo_q, hi_q])), float(p_value),
        cb / ca - 1 if ca else math.nan, float(rel[0]), float(rel[1]),
        f"percentile bootstrap of units ({resamples:,} resamples)",
    )  # fmt: skip


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control over the comparisons)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return [float(x) for x in out]


@dataclass(frozen=True)
class SampleRatio:
    """Chi-square goodness of fit of the units per arm against the planned split."""

    arms: tuple[str, ...]
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    planned: tuple[float, ...]  # shares, summing to 1
    chi2: float
    p_value: float
    threshold: float
    mismatch: bool


SRM_THRESHOLD = 0.001  # the usual SRM alarm level: strict, since the check runs on every test


def sample_ratio(
    arms: Sequence[str], observed: Sequence[int], planned: Sequence[float], threshold: float = SRM_THRESHOLD
) -> SampleRatio:
    """Compare units per arm with the planned shares (any positive weights, normalised here)."""
    shares = np.asarray(planned, dtype=np.float64) / float(np.sum(planned))
    counts = np.asarray(observed, dtype=np.float64)
    expected = shares * counts.sum()
    chi2, p_value = stats.chisquare(counts, expected)
    return SampleRatio(
        tuple(arms), tuple(int(c) for c in counts), tuple(float(e) for e in expected),
        tuple(float(s) for s in shares), float(chi2), float(p_value), threshold, bool(p_value < threshold),
    )  # fmt: skip
