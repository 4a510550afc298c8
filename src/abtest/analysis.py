"""The readout of a per-unit table: per-arm metrics, each arm against the control, CUPED, SRM, power.

Metrics per unit: conversion (0/1), revenue per visitor (every unit, 0 when it bought nothing) and
order value (revenue per converting unit; conditioned on converting, which the treatment may change,
so read it beside conversion, not alone). With more than two arms every arm is compared with the
control and the p-values of each metric are Holm-adjusted over those comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from shopformer.abtest import power as pw
from shopformer.abtest.cuped import Cuped, cuped
from shopformer.abtest.stats import (
    Difference,
    Interval,
    SampleRatio,
    Summary,
    bootstrap,
    holm,
    mean_interval,
    sample_ratio,
    two_proportions,
    welch,
    wilson,
)
from shopformer.abtest.units import UnitTable
from shopformer.errors import ConfigError

METRICS = {
    "conversion": "conversion",
    "revenue_per_visitor": "revenue / visitor",
    "order_value": "order value",
}
CONTROL_NAMES = ("control", "a")


@dataclass(frozen=True)
class ArmMetrics:
    """One arm's units and metrics with their intervals (None where the input has no revenue)."""

    arm: str
    units: int
    conversions: int
    conversion: Interval
    revenue_per_visitor: Interval | None
    order_value: Interval | None


@dataclass(frozen=True)
class PowerCheck:
    """What the test could detect: the MDE at ``power`` and the power for the observed effect."""

    mde: float  # absolute, at the target power
    mde_relative: float
    observed_power: float
    underpowered: bool


@dataclass
class Comparison:
    """One metric of one arm against the control."""

    metric: str
    arm: str
    control: str
    difference: Difference
    p_holm: float = math.nan
    cuped: Difference | None = None
    bootstrap: Difference | None = None
    power: PowerCheck | None = None


@dataclass
class Readout:
    """Everything a readout reports (``--out`` writes it as JSON)."""

    source: str
    alpha: float
    power_target: float
    control: str
    arms: list[ArmMetrics]
    comparisons: list[Comparison]
    srm: SampleRatio
    cuped: dict[str, float] | None = None  # per metric: variance reduction; and units with/without X
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def pick_control(arms: Sequence[str], control: str | None) -> str:
    """``control`` (must be an arm), else an arm named control or A, else the first in sorted order."""
    if control is not None:
        if control not in arms:
            raise ConfigError(f"--control: {control!r} is not an arm (the arms are {', '.join(arms)})")
        return control
    by_name = {a.lower(): a for a in arms}
    return next((by_name[n] for n in CONTROL_NAMES if n in by_name), sorted(arms)[0])


def parse_split(text: str | None, arms: int) -> list[float]:
    """'50/50' or '1/1/2' as weights, one per arm (control first); equal when None."""
    if text is None:
        return [1.0] * arms
    try:
        parts = [float(p) for p in text.split("/")]
    except ValueError:
        raise ConfigError(f"--split: {text!r} is not weights like 50/50") from None
    if len(parts) != arms or not all(p > 0 for p in parts):
        raise ConfigError(f"--split: {text!r} needs {arms} positive weights (control first), e.g. 50/50")
    return parts


def arm_metrics(arm: str, frame: pd.DataFrame, has_revenue: bool, alpha: float) -> ArmMetrics:
    units, conversions = len(frame), int(frame["converted"].sum())
    rpv = ov = None
    if has_revenue:
        rpv = mean_interval(Summary.of(frame["revenue"].to_numpy()), alpha)
        ov = mean_interval(Summary.of(frame.loc[frame["converted"] > 0, "revenue"].to_numpy()), alpha)
    return ArmMetrics(arm, units, conversions, wilson(conversions, units, alpha), rpv, ov)


def metric_values(frame: pd.DataFrame, metric: str) -> np.ndarray:
    if metric == "conversion":
        return frame["converted"].to_numpy(np.float64)
    if metric == "revenue_per_visitor":
        return frame["revenue"].to_numpy(np.float64)
    return frame.loc[frame["converted"] > 0, "revenue"].to_numpy(np.float64)


def power_check(metric: str, a: np.ndarray, b: np.ndarray, alpha: float, target: float) -> PowerCheck:
    """MDE at ``target`` power with these units, and the power for the observed difference."""
    n_a, n_b = a.size, b.size
    base = float(a.mean())
    if metric == "conversion":
        mde = pw.proportion_mde(base, n_a, n_b, alpha, target)
        observed = pw.proportion_power(base, float(b.mean()), n_a, n_b, alpha)
    else:
        sd = math.sqrt((a.var(ddof=1) * (n_a - 1) + b.var(ddof=1) * (n_b - 1)) / (n_a + n_b - 2))
        mde = pw.mean_mde(sd, n_a, n_b, alpha, target) if sd > 0 else math.nan
        observed = pw.mean_power(float(b.mean()) - base, sd, n_a, n_b, alpha)
    relative = mde / base if base else math.inf
    return PowerCheck(mde, relative, observed, bool(observed < target))


def compare(metric: str, a: np.ndarray, b: np.ndarray, alpha: float) -> Difference:
    if metric == "conversion":
        return two_proportions(int(a.sum()), a.size, int(b.sum()), b.size, alpha)
    return welch(Summary.of(a), Summary.of(b), alpha)


def analyse(
    table: UnitTable,
    *,
    control: str | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    split: str | None = None,
    bootstrap_resamples: int = 0,
    seed: int = 0,
) -> Readout:
    """The full readout of ``table`` (see the module docstring)."""
    frame = table.frame
    control = pick_control(table.arms, control)
    order = [control] + [a for a in table.arms if a != control]
    arm_of_unit = frame["arm"].to_numpy(dtype=object)
    masks = {arm: arm_of_unit == arm for arm in order}
    by_arm = {arm: frame[masks[arm]] for arm in order}
    arms = [arm_metrics(arm, by_arm[arm], table.has_revenue, alpha) for arm in order]
    srm = sample_ratio(order, [m.units for m in arms], parse_split(split, len(order)))
    metrics = ["conversion"] + (["revenue_per_visitor", "order_value"] if table.has_revenue else [])
    adjusted = cuped_results(frame, metrics) if table.has_covariate else {}
    comparisons = []
    for metric in metrics:
        family = []
        for arm in order[1:]:
            a, b = metric_values(by_arm[control], metric), metric_values(by_arm[arm], metric)
            if min(a.size, b.size) < 2:
                continue
            c = Comparison(metric, arm, control, compare(metric, a, b, alpha))
            c.power = power_check(metric, a, b, alpha, power)
            if metric in adjusted:
                y = adjusted[metric].adjusted
                c.cuped = welch(Summary.of(y[masks[control]]), Summary.of(y[masks[arm]]), alpha)
            if bootstrap_resamples and metric != "conversion":
                c.bootstrap = bootstrap(a, b, bootstrap_resamples, alpha, seed)
            family.append(c)
        for c, p in zip(family, holm([c.difference.p_value for c in family]), strict=True):
            c.p_holm = p
        comparisons += family
    readout = Readout(table.source, alpha, power, control, arms, comparisons, srm, notes=list(table.notes))
    if len(order) > 2:
        readout.notes.append(
            f"{len(order) - 1} arms against the control: p (Holm) controls the chance of any false positive "
            "per metric; judge by it, not by the raw p"
        )
    if adjusted:
        readout.cuped = cuped_summary(adjusted)
    readout.warnings = warnings(readout)
    return readout


def cuped_results(frame: pd.DataFrame, metrics: Sequence[str]) -> dict[str, Cuped]:
    """CUPED of conversion and revenue per visitor (order value is conditional on converting: not it)."""
    x = frame["covariate"].to_numpy(np.float64)
    return {m: cuped(metric_values(frame, m), x) for m in metrics if m != "order_value"}


def cuped_summary(results: dict[str, Cuped]) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric, result in results.items():
        out[f"{metric}_variance_reduction"] = result.variance_reduction
        out[f"{metric}_theta"] = result.theta
        out["units_with_covariate"] = result.with_covariate
        out["units_without_covariate"] = result.without_covariate
    return out


def units_phrase(n_control: int, n_treatment: int, control: str, arm: str) -> str:
    if abs(n_control - n_treatment) <= 0.02 * max(n_control, n_treatment):
        return f"{round((n_control + n_treatment) / 2):,} units per arm"
    return f"{n_control:,} ({control}) and {n_treatment:,} ({arm}) units"


def power_warning(c: Comparison, arms: dict[str, ArmMetrics], alpha: float, target: float) -> str | None:
    """One line when ``c`` could not reliably detect the effect it observed (None when it could)."""
    if c.power is None or not c.power.underpowered:
        return None
    name = METRICS[c.metric]
    units = units_phrase(arms[c.control].units, arms[c.arm].units, c.control, c.arm)
    lift, mde = c.difference.relative, c.power.mde_relative
    could = f"could only detect a lift of {mde:.0%} in {name} at {target:.0%} power"
    if not math.isfinite(mde):
        could = f"could not detect even the largest lift in {name} at {target:.0%} power"
    head = f"{c.arm} vs {c.control}, {name}: underpowered: with {units} this test {could}"
    if math.isnan(lift):
        return f"{head}; a non-significant result says little"
    if c.difference.significant(alpha):
        return (
            f"{head}; the observed lift of {lift:+.1%} passed the test with only "
            f"{c.power.observed_power:.0%} power for it, so it may overstate the true effect (winner's curse)"
        )
    far = "far below" if abs(lift) < mde / 2 else "below"
    return f"{head}; the observed lift of {lift:+.1%} is {far} that: a non-significant result says little"


def warnings(readout: Readout) -> list[str]:
    """Sample ratio mismatch first (it voids the rest), then each underpowered conversion or revenue test."""
    out = []
    srm = readout.srm
    if srm.mismatch:
        counts = ", ".join(f"{a} {n:,}" for a, n in zip(srm.arms, srm.observed, strict=True))
        planned = "/".join(f"{s * 100:.4g}" for s in srm.planned)
        out.append(
            f"SAMPLE RATIO MISMATCH: units {counts} against a planned {planned} split (chi-square "
            f"p = {srm.p_value:.2g} < {srm.threshold}): assignment or logging is broken; "
            "do not trust this readout until the cause is found"
        )
    arms = {m.arm: m for m in readout.arms}
    for c in readout.comparisons:
        if c.metric == "order_value":  # secondary: its MDE is in the table
            continue
        line = power_warning(c, arms, readout.alpha, readout.power_target)
        if line:
            out.append(line)
    return out
