"""Sample size, minimum detectable effect (MDE) and power of a two-arm test, two-sided.

Proportions use the textbook pooled-variance formula (Fleiss; the one the pooled z-test assumes):

    n_A = (z_{1-a/2} sqrt(pbar qbar (1 + 1/k)) + z_{1-b} sqrt(p_A q_A + p_B q_B / k))^2 / delta^2

with k = n_B / n_A and pbar = (p_A + k p_B) / (1 + k); e.g. p_A 0.10, delta 0.01, alpha 0.05, power
0.8, k 1: 14,751 units per arm. Means use the normal approximation
n_A = (z_{1-a/2} + z_{1-b})^2 sd^2 (1 + 1/k) / delta^2. The MDE inverts these for the units at hand.
"""

from __future__ import annotations

import math

from scipy import optimize, special

from shopformer.abtest.stats import z_quantile


def _z_power(power: float) -> float:
    return float(special.ndtri(power))


def proportion_sample_size(
    baseline: float, delta: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> tuple[int, int]:
    """Units (control, treatment) to detect ``baseline`` -> ``baseline + delta`` (absolute)."""
    p_a, p_b = baseline, baseline + delta
    if not (0 < p_a < 1 and 0 < p_b < 1) or delta == 0:
        raise ValueError(f"baseline {baseline} and lift {delta} must give two different rates in (0, 1)")
    pbar = (p_a + ratio * p_b) / (1 + ratio)
    root = z_quantile(alpha) * math.sqrt(pbar * (1 - pbar) * (1 + 1 / ratio)) + _z_power(power) * math.sqrt(
        p_a * (1 - p_a) + p_b * (1 - p_b) / ratio
    )
    n_a = math.ceil(root**2 / delta**2)
    return n_a, math.ceil(n_a * ratio)


def proportion_power(
    p_control: float, p_treatment: float, n_control: int, n_treatment: int, alpha: float
) -> float:
    """Power of the pooled two-sided z-test at the true rates (the formula above, solved for power)."""
    delta = abs(p_treatment - p_control)
    pbar = (n_control * p_control + n_treatment * p_treatment) / (n_control + n_treatment)
    se0 = math.sqrt(pbar * (1 - pbar) * (1 / n_control + 1 / n_treatment))
    se1 = math.sqrt(p_control * (1 - p_control) / n_control + p_treatment * (1 - p_treatment) / n_treatment)
    if se1 == 0:
        return 1.0 if delta > 0 else 0.0
    return float(special.ndtr((delta - z_quantile(alpha) * se0) / se1))


def proportion_mde(
    baseline: float, n_control: int, n_treatment: int, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest absolute rise over ``baseline`` detected with ``power`` (inf when none is)."""
    if not 0 < baseline < 1 or min(n_control, n_treatment) < 1:
        return math.inf

    def gap(delta: float) -> float:
        return proportion_power(baseline, baseline + delta, n_control, n_treatment, alpha) - power

    top = 1 - baseline - 1e-12
    if gap(top) < 0:
        return math.inf
    return float(optimize.brentq(gap, 1e-12, top, xtol=1e-10))


def mean_sample_size(
    sd: float, delta: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> tuple[int, int]:
    """Units (control, treatment) to detect a difference of means ``delta`` with per-unit ``sd``."""
    if delta == 0 or not sd > 0:
        raise ValueError(f"the lift ({delta}) must be non-zero and the standard deviation ({sd}) positive")
    n_a = math.ceil((z_quantile(alpha) + _z_power(power)) ** 2 * sd**2 * (1 + 1 / ratio) / delta**2)
    return n_a, math.ceil(n_a * ratio)


def mean_mde(sd: float, n_control: int, n_treatment: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest absolute difference of means detected with ``power``."""
    return (z_quantile(alpha) + _z_power(power)) * sd * math.sqrt(1 / n_control + 1 / n_treatment)


def mean_power(delta: float, sd: float, n_control: int, n_treatment: int, alpha: float = 0.05) -> float:
    """Power of the two-sided test of means at a true difference ``delta`` (normal approximation)."""
    se = sd * math.sqrt(1 / n_control + 1 / n_treatment)
    if not se > 0:
        return math.nan
    return float(special.ndtr(abs(delta) / se - z_quantile(alpha)))
