"""Simulated A/B tests with known truth, for the tests and ``benchmarks/ab.py``.

Each unit has potential outcomes: it converts in control when U < p and in treatment when
U < p (1 + lift) (the same U, so the lift only adds converters); a converter's order value is
lognormal, scaled by ``1 + revenue_lift`` in treatment. Arms are drawn per unit with the planned shares
(a Bernoulli split, as a real assignment service does). The pre-period covariate is correlated
``covariate_corr`` with the unit's control revenue (standardised), drawn before assignment, and
missing for a share ``covariate_missing`` of units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shopformer.abtest.units import UnitTable

DAY = 86_400.0


@dataclass(frozen=True)
class Scenario:
    """A test's truth: conversion, order value, planted lifts, covariate, units and split."""

    units: int = 20_000  # in all arms together
    conversion: float = 0.03
    lift: float = 0.0  # relative lift in conversion
    order_mean_log: float = 3.5  # lognormal order value: median e^3.5 = 33
    order_sigma_log: float = 1.0
    revenue_lift: float = 0.0  # relative lift in order value
    covariate_corr: float = 0.0  # 0: no covariate
    covariate_missing: float = 0.0
    shares: tuple[float, ...] = (0.5, 0.5)
    days: float = 14.0

    @property
    def true_difference(self) -> float:
        """Treatment minus control conversion rate."""
        return self.conversion * self.lift

    @property
    def true_revenue_difference(self) -> float:
        """Treatment minus control revenue per visitor (expected)."""
        order = np.exp(self.order_mean_log + self.order_sigma_log**2 / 2)
        return self.conversion * order * ((1 + self.lift) * (1 + self.revenue_lift) - 1)


def simulate(scenario: Scenario, seed: int = 0) -> UnitTable:
    """One simulated test as a per-unit table (arms A, B, C, ... in the order of ``shares``)."""
    s = scenario
    rng = np.random.default_rng(seed)
    u = rng.random(s.units)
    order_value = rng.lognormal(s.order_mean_log, s.order_sigma_log, s.units)
    arm_index = rng.choice(len(s.shares), size=s.units, p=np.asarray(s.shares) / sum(s.shares))
    treated = arm_index > 0
    converted = u < np.where(treated, s.conversion * (1 + s.lift), s.conversion)
    revenue = np.where(converted, order_value * np.where(treated, 1 + s.revenue_lift, 1.0), 0.0)
    frame = pd.DataFrame(
        {
            "unit": np.char.add("u", np.arange(s.units).astype(str)),
            "arm": np.array([chr(ord("A") + i) for i in range(len(s.shares))])[arm_index],
            "converted": converted.astype(np.float64),
            "revenue": revenue,
            "covariate": covariate(u < s.conversion, order_value, s, rng),
            "time": np.sort(rng.random(s.units)) * s.days * DAY,
        }
    )
    has_covariate = s.covariate_corr > 0
    return UnitTable(frame, "simulated", True, has_covariate, True, [])


def covariate(
    converts: np.ndarray, order_value: np.ndarray, s: Scenario, rng: np.random.Generator
) -> np.ndarray:
    """Pre-period metric with correlation ``covariate_corr`` to the control revenue (NaN: missing)."""
    if s.covariate_corr <= 0:
        return np.full(converts.size, np.nan)
    control_revenue = np.where(converts, order_value, 0.0)
    z = (control_revenue - control_revenue.mean()) / control_revenue.std()
    x = s.covariate_corr * z + np.sqrt(1 - s.covariate_corr**2) * rng.standard_normal(converts.size)
    x[rng.random(converts.size) < s.covariate_missing] = np.nan
    return x
