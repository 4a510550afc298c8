"""Is a lead real? A paired bootstrap of the difference of one metric between two models on the same rows.

Rows that belong together (the prefixes of one session) are resampled together: their labels are
correlated, and resampling them one by one would understate the spread. Both models are scored on
the same resample each time, so the interval is that of the *difference*, far tighter than two
separate intervals would suggest when the models err on the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Metric = Callable[[Any, np.ndarray], float]
"""``metric(predictions, rows) -> value`` on the rows ``rows`` (an index array, repeats allowed)."""


@dataclass(frozen=True)
class Difference:
    """``metric(a) - metric(b)`` on all rows, with the bootstrap's standard deviation and 95 % interval."""

    delta: float
    sd: float
    low: float
    high: float
    resamples: int  # resamples where both metrics were defined

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def group_rows(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows sorted by group, start of each group's run in that order + the end)."""
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(inverse))]
    return order, bounds


def resample_rows(order: np.ndarray, bounds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The rows of as many groups as there are, drawn with replacement (a group's rows stay together)."""
    n_groups = len(bounds) - 1
    picked = rng.integers(0, n_groups, n_groups)
    starts, lengths = bounds[picked], bounds[picked + 1] - bounds[picked]
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return order[np.arange(lengths.sum()) + shift]


def paired_bootstrap(
    metric: Metric,
    a: Any,
    b: Any,
    groups: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
) -> Difference:
    """The difference ``metric(a) - metric(b)`` over the rows of ``groups`` (one group id per row),
    with its spread over ``resamples`` group resamples; resamples where either metric is undefined
    (NaN, e.g. one class only) are skipped."""
    groups = np.asarray(groups)
    if groups.ndim != 1 or not len(groups):
        raise ValueError("paired_bootstrap needs one group id per row, and at least one row")
    every = np.arange(len(groups))
    delta = metric(a, every) - metric(b, every)
    order, bounds = group_rows(groups)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        rows = resample_rows(order, bounds, rng)
        value = metric(a, rows) - metric(b, rows)
        if math.isfinite(value):
            values.append(value)
    if not values:
        nan = math.nan
        return Difference(float(delta), nan, nan, nan, 0)
    spread = np.asarray(values)
    low, high = np.quantile(spread, [0.025, 0.975])
    return Difference(
        float(delta),
        float(spread.std(ddof=1)) if len(spread) > 1 else 0.0,
        float(low),
        float(high),
        len(spread),
    )


def mean_difference(differences: list[Difference]) -> Difference:
    """The mean of differences measured on disjoint rows (the test blocks of cross-validation folds):
    independent estimates, so the sd of the mean is ``sqrt(sum sd^2) / n``; the 95 % interval is the
    normal one, ``mean +- 1.96 sd``, as the per-fold intervals' quantiles do not average."""
    if not differences:
        raise ValueError("mean_difference needs at least one difference")
    n = len(differences)
    delta = sum(d.delta for d in differences) / n
    sd = math.sqrt(sum(d.sd**2 for d in differences)) / n
    return Difference(delta, sd, delta - 1.96 * sd, delta + 1.96 * sd, min(d.resamples for d in differences))
