"""Bootstrap percentile intervals (resampling whole requests) and importance-weight diagnostics.

The positions of one request share a context, so the bootstrap draws whole slates: each estimator's
terms are summed per slate once, and a resample is a vector of slate counts, so all resamples of all
estimators are a few matrix products (in chunks that bound memory), never a Python loop over rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shopformer.errors import ConfigError
from shopformer.offpolicy.estimators import Estimator
from shopformer.offpolicy.feedback import BanditFeedback

TOP = 5
_MAX_CELLS = 1 << 21  # resample-by-slate counts held at once (bounds the bootstrap's memory)


@dataclass(frozen=True)
class WeightDiagnostics:
    """How much an estimate rests on a few importance weights.

    ``ess``: effective sample size (sum w)^2 / sum w^2 of ``n`` units (rows or slates);
    ``top_weights``: the largest weights, descending; ``top_share``: the share of sum |w r| that the
    units with those weights carry (NaN when every w r is 0); ``cumulative``: that share for the top
    1, 2, ... weights.
    """

    n: int
    unit: str
    ess: float
    top_weights: tuple[float, ...]
    top_share: float
    cumulative: tuple[float, ...]


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size of importance weights: (sum w)^2 / sum w^2 (0 when all are 0)."""
    w = np.asarray(weights, dtype=np.float64)
    square = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / square if square > 0 else 0.0


def weight_diagnostics(
    weights: np.ndarray, rewards: np.ndarray, *, top: int = TOP, unit: str = "rows"
) -> WeightDiagnostics:
    """ESS, the ``top`` largest weights and the share of the IPS numerator sum |w r| they carry."""
    w = np.asarray(weights, dtype=np.float64)
    contribution = np.abs(w * np.asarray(rewards, dtype=np.float64))
    k = min(top, w.size)
    largest = np.argpartition(-w, k - 1)[:k] if k else np.zeros(0, dtype=np.int64)
    largest = largest[np.argsort(-w[largest], kind="stable")]
    total = float(contribution.sum())
    cumulative = np.cumsum(contribution[largest]) / total if total > 0 else np.full(k, np.nan)
    return WeightDiagnostics(
        n=int(w.size),
        unit=unit,
        ess=effective_sample_size(w),
        top_weights=tuple(float(x) for x in w[largest]),
        top_share=float(cumulative[-1]) if k else float("nan"),
        cumulative=tuple(float(x) for x in cumulative),
    )


def weight_warning(
    diagnostics: WeightDiagnostics,
    *,
    min_ess: float = 30,
    min_ess_share: float = 0.01,
    max_top_share: float = 0.5,
    of: str = "the estimate",
) -> str | None:
    """A sentence for people when the estimate rests on a handful of weights, else None.

    Fires when ESS < ``min_ess`` or < ``min_ess_share`` of the units, or when the top weights carry
    more than ``max_top_share`` of sum |w r|. ``of`` names what that sum is (for DR: its weighted term).
    """
    d = diagnostics
    ess_text = f"ESS {d.ess:,.0f} of {d.n:,} {d.unit}"
    shares = np.asarray(d.cumulative)
    if d.top_share > max_top_share:  # False for NaN
        m = int(np.argmax(shares > max_top_share)) + 1
        weights = "weight" if m == 1 else "weights"
        return f"rests on {m} large {weights} ({_percent(shares[m - 1])} of {of}); {ess_text}"
    if d.ess < min_ess or d.ess < min_ess_share * d.n:
        return f"rests on few weights: {ess_text}"
    return None


def support_warning(unsupported_share: float | None, *, min_share: float = 0.01) -> str | None:
    """A sentence when the target puts at least ``min_share`` of its mass where the logs never look."""
    if unsupported_share is None or not unsupported_share >= min_share:
        return None
    return (
        f"the target puts {_percent(unsupported_share)} of its mass on items the logs never show: "
        "IPS-type estimates cannot see them"
    )


def unsupported_share(feedback: BanditFeedback) -> float | None:
    """The target's average per-slot mass on never-logged items (None when the feedback lacks it)."""
    mass = feedback.unsupported_mass
    return None if mass is None else float(np.mean(mass))


def bootstrap_values(
    feedback: BanditFeedback,
    estimators: Sequence[Estimator],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    max_cells: int = _MAX_CELLS,
) -> np.ndarray:
    """Each estimator's value on ``n_bootstrap`` resamples of whole slates: [n_bootstrap, n_estimators].

    All estimators see the same resamples (seeded), so their intervals are comparable.
    """
    if n_bootstrap < 0:
        raise ConfigError(f"n_bootstrap: must be >= 0, got {n_bootstrap}")
    slate, n_slates = feedback.slate_index, feedback.n_slates
    columns, spans = [], []
    for estimator in estimators:
        estimator.check(feedback)
        terms = estimator.terms(feedback)
        spans.append(slice(len(columns), len(columns) + len(terms)))
        columns.extend(terms)
    columns.append(np.ones(feedback.n_rows))  # rows per slate
    per_slate = np.stack([np.bincount(slate, weights=c, minlength=n_slates) for c in columns], axis=1)

    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_bootstrap, max_cells // max(n_slates, 1)))
    values = np.empty((n_bootstrap, len(estimators)))
    for start in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - start)
        draws = rng.integers(0, n_slates, size=(size, n_slates)) + n_slates * np.arange(size)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * n_slates).reshape(size, n_slates)
        sums = counts.astype(np.float64) @ per_slate
        rows, slates = sums[:, -1], np.full(size, float(n_slates))
        for j, (estimator, span) in enumerate(zip(estimators, spans, strict=True)):
            values[start : start + size, j] = estimator.combine(sums[:, span], rows, slates)
    return values


def percentile_interval(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """The (alpha/2, 1 - alpha/2) percentiles of bootstrap values (NaN resamples ignored)."""
    check_alpha(alpha)
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_interval(
    feedback: BanditFeedback,
    estimator: Estimator,
    *,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """The bootstrap percentile interval (default 95 %) of one estimator, resampling whole slates."""
    check_alpha(alpha)
    values = bootstrap_values(feedback, [estimator], n_bootstrap=n_bootstrap, seed=seed)
    return percentile_interval(values[:, 0], alpha)


def check_alpha(alpha: float) -> None:
    """Raise :class:`ConfigError` unless 0 < alpha < 1."""
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha: must be between 0 and 1 (0.05 for a 95 % interval), got {alpha!r}")


def _percent(share: float) -> str:
    return f"{100 * share:.0f} %"
