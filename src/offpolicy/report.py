"""Evaluate a target policy with several estimators at once, and print the result for people."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shopformer.errors import ConfigError
from shopformer.offpolicy.estimators import DEFAULT_CLIP, DEFAULT_SWITCH_LAMBDA, Estimator, make_estimator
from shopformer.offpolicy.feedback import BanditFeedback
from shopformer.offpolicy.intervals import (
    bootstrap_values,
    check_alpha,
    percentile_interval,
    support_warning,
    unsupported_share,
    weight_diagnostics,
    weight_warning,
)

DEFAULT_ESTIMATORS = ("ipw", "clipped-ipw", "snipw", "dm", "dr", "sndr", "switch-dr")


@dataclass(frozen=True)
class Estimate:
    """One estimator's value with its bootstrap interval and importance-weight diagnostics.

    ``ess``/``top_weights``/``top_share`` are None/() for the direct method (it has no weights);
    ``warning`` is a sentence for people, or None when nothing looks fragile.
    """

    name: str
    value: float
    low: float
    high: float
    ess: float | None
    top_weights: tuple[float, ...]
    top_share: float | None
    warning: str | None
    level: float = 0.95


def evaluate(
    feedback: BanditFeedback,
    estimators: Sequence[str] = DEFAULT_ESTIMATORS,
    *,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    clip: float = DEFAULT_CLIP,
    switch_lambda: float = DEFAULT_SWITCH_LAMBDA,
    unsupported_mass: float | np.ndarray | None = None,
) -> list[Estimate]:
    """Every requested estimate with a (1 - alpha) bootstrap interval over whole slates (seeded).

    ``unsupported_mass``: the target's mass on (item, position) pairs the logging policy never shows,
    as a total share or per row (averaged); default: the feedback's ``unsupported_mass`` column, if any.
    """
    check_alpha(alpha)
    if isinstance(estimators, str):
        raise ConfigError(f"estimators: expected a list of names, got the string {estimators!r}")
    chosen = [make_estimator(name, clip=clip, switch_lambda=switch_lambda) for name in estimators]
    for estimator in chosen:
        estimator.check(feedback)
    values = bootstrap_values(feedback, chosen, n_bootstrap=n_bootstrap, seed=seed)  # 0: no interval
    share = unsupported_share(feedback) if unsupported_mass is None else float(np.mean(unsupported_mass))
    return [_estimate(feedback, estimator, values[:, j], alpha, share) for j, estimator in enumerate(chosen)]


def _estimate(
    feedback: BanditFeedback, estimator: Estimator, resampled: np.ndarray, alpha: float, share: float | None
) -> Estimate:
    low, high = percentile_interval(resampled, alpha)
    notes = [] if estimator.uses_model else [support_warning(share)]
    ess, top, top_share = None, (), None
    if estimator.weights is not None:
        diagnostics = weight_diagnostics(*estimator.weights(feedback), unit=estimator.unit)
        of = "its importance-weighted term" if estimator.uses_model else "the estimate"
        notes.insert(0, weight_warning(diagnostics, of=of))
        ess, top, top_share = diagnostics.ess, diagnostics.top_weights, diagnostics.top_share
    warning = "; ".join(note for note in notes if note) or None
    return Estimate(
        estimator.name, estimator.estimate(feedback), low, high, ess, top, top_share, warning, 1 - alpha
    )


def format_table(estimates: Sequence[Estimate], truth: float | None = None) -> str:
    """A plain-text table, one estimator a line, warnings as numbered notes under it (shared when equal).

    With ``truth``: the signed relative error of each value and whether its interval covers the truth.
    """
    if not estimates:
        return "(no estimates)"
    level = f"{100 * estimates[0].level:.0f} % interval"
    header = ["estimator", "value", level, "ESS", "top-5 share"]
    if truth is not None:
        header += ["rel. error", "covers"]
    lines, notes = [], {}  # warning -> names of the estimators it concerns
    for e in estimates:
        mark = ""
        if e.warning:
            notes.setdefault(e.warning, []).append(e.name)
            mark = f" [{list(notes).index(e.warning) + 1}]"
        row = [
            e.name + mark,
            _num(e.value),
            f"[{_num(e.low)}, {_num(e.high)}]",
            "-" if e.ess is None else f"{e.ess:,.0f}",
            "-" if e.top_share is None or np.isnan(e.top_share) else f"{100 * e.top_share:.0f} %",
        ]
        if truth is not None:
            row += [_relative(e.value, truth), "yes" if e.low <= truth <= e.high else "no"]
        lines.append(row)
    widths = [max(len(str(cells[i])) for cells in [header, *lines]) for i in range(len(header))]
    table = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *lines]
    ]
    table.insert(1, "  ".join("-" * w for w in widths))
    if truth is not None:
        table.insert(0, f"truth: {_num(truth)}")
    footnotes = [f"[{i}] {', '.join(names)}: {text}" for i, (text, names) in enumerate(notes.items(), 1)]
    return "\n".join(line.rstrip() for line in [*table, *footnotes])


def _num(value: float) -> str:
    return "nan" if np.isnan(value) else f"{value:.4g}"


def _relative(value: float, truth: float) -> str:
    if truth == 0:
        return "-"
    return f"{100 * (value - truth) / abs(truth):+.1f} %"
