"""CUPED: variance reduction with a pre-period covariate (Deng, Xu, Kohavi and Walker, 2013).

``Y_adj = Y - theta (X - mean X)`` with ``theta = cov(Y, X) / var(X)`` pooled over all arms. X is
measured before assignment, so it does not depend on the arm and the adjusted difference of means
estimates the same effect as the plain one, with variance shrunk by the share of Y's variance that X
explains (``1 - corr(Y, X)^2`` at best).

Units without a pre-period value get X = mean X (the mean of the units that have one): their
adjustment is 0, so they stay unadjusted. Whether a unit has a value was fixed before assignment too,
so this keeps the estimator unbiased; it only loses the variance reduction on those units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Cuped:
    """The adjusted values and what the adjustment did."""

    adjusted: np.ndarray
    theta: float
    variance_reduction: float  # 1 - var(Y_adj) / var(Y), over all units
    with_covariate: int
    without_covariate: int


def cuped(y: np.ndarray, x: np.ndarray) -> Cuped:
    """Adjust ``y`` with the pre-period ``x`` (NaN where a unit has none; see the module docstring)."""
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    has = np.isfinite(x)
    n_with = int(has.sum())
    if n_with < 2 or float(np.var(x[has])) == 0.0:
        return Cuped(y.copy(), 0.0, 0.0, n_with, int(y.size - n_with))
    filled = np.where(has, x, x[has].mean())
    centred = filled - filled.mean()
    theta = float(np.dot(centred, y - y.mean()) / np.dot(centred, centred))
    adjusted = y - theta * centred
    var_y = float(np.var(y, ddof=1))
    reduction = 1.0 - float(np.var(adjusted, ddof=1)) / var_y if var_y > 0 else math.nan
    return Cuped(adjusted, theta, reduction, n_with, int(y.size - n_with))
