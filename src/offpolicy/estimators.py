"""The off-policy estimators of the Open Bandit Pipeline (OBP 0.5.x), on sparse per-row feedback.

Each estimator is per-row ``terms`` (1-D arrays) plus a ``combine`` of their sums, the row count and
the slate count. For the plain estimators the single term is OBP's ``_estimate_round_rewards`` and
``combine`` is its mean; the self-normalised ones divide two sums, so a bootstrap resample (which
only re-weights the sums) re-normalises as it should. Formulas, with ``w = target_pscore / pscore``
(OBP: ``action_dist[i, action_i, position_i] / pscore_i``) and ``n`` rows, ``S`` slates:

- ``ipw``        mean(w r)                                   InverseProbabilityWeighting(lambda_=inf)
- ``clipped-ipw`` mean(min(w, clip) r)                       InverseProbabilityWeighting(lambda_=clip)
- ``snipw``      sum(w r) / sum(w)                           SelfNormalizedInverseProbabilityWeighting
- ``dm``         mean(dm_value)                              DirectMethod
- ``dr``         mean(dm_value + w (r - q_hat))              DoublyRobust(lambda_=inf)
- ``sndr``       mean(dm_value) + sum(w (r - q_hat)) / sum(w)   SelfNormalizedDoublyRobust
- ``switch-dr``  mean(dm_value + 1{w <= lambda} w (r - q_hat))  SwitchDoublyRobust(lambda_)
- ``iips``       sum(w r) / S                                SlateIndependentIPS
- ``sips``       sum((target_slate_pscore / slate_pscore) r) / S   SlateStandardIPS
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from shopformer.errors import ConfigError, DataError
from shopformer.offpolicy.feedback import BanditFeedback

Terms = Callable[[BanditFeedback], tuple[np.ndarray, ...]]
# combine(sums [..., k], rows [...], slates [...]) -> value [...]; vectorised over leading axes.
Combine = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# (weights, rewards) per unit, for the weight diagnostics.
Weights = Callable[[BanditFeedback], tuple[np.ndarray, np.ndarray]]

ESTIMATORS = ("ipw", "clipped-ipw", "snipw", "dm", "dr", "sndr", "switch-dr", "iips", "sips")
DEFAULT_CLIP = 100.0
DEFAULT_SWITCH_LAMBDA = 100.0


@dataclass(frozen=True)
class Estimator:
    """One estimator: its per-row terms, how their sums combine into a value, and what it needs."""

    name: str
    terms: Terms
    combine: Combine
    requires: tuple[str, ...] = ()
    weights: Weights | None = None  # None: no importance weights (the direct method)
    unit: Literal["rows", "slates"] = "rows"  # what one importance weight belongs to
    uses_model: bool = False  # False: blind to items the logging policy never shows

    def check(self, feedback: BanditFeedback) -> None:
        """Raise :class:`DataError` when the feedback lacks a column this estimator needs."""
        missing = [name for name in self.requires if getattr(feedback, name) is None]
        if missing:
            raise DataError(
                f"{self.name} needs the column(s) {', '.join(self.requires)}; "
                f"the feedback has no {missing[0]!r}"
            )

    def sums(self, feedback: BanditFeedback) -> np.ndarray:
        """The sums of the terms over all rows, shape [k]."""
        self.check(feedback)
        return np.array([np.sum(term) for term in self.terms(feedback)])

    def estimate(self, feedback: BanditFeedback) -> float:
        """The point estimate of the target policy's value."""
        rows, slates = np.float64(feedback.n_rows), np.float64(feedback.n_slates)
        return float(self.combine(self.sums(feedback), rows, slates))


def make_estimator(
    name: str, *, clip: float = DEFAULT_CLIP, switch_lambda: float = DEFAULT_SWITCH_LAMBDA
) -> Estimator:
    """The estimator called ``name`` (one of :data:`ESTIMATORS`).

    ``clip`` is ``clipped-ipw``'s largest allowed weight (OBP's ``lambda_`` of IPW); ``switch_lambda``
    is ``switch-dr``'s threshold: rows with ``w <= switch_lambda`` keep the DR correction, the others
    use the model alone (OBP's convention: 0 gives DM, infinity gives DR).
    """
    clip, switch_lambda = _threshold("clip", clip), _threshold("switch_lambda", switch_lambda)
    builders: dict[str, Callable[[], Estimator]] = {
        "ipw": lambda: _ipw("ipw", math.inf),
        "clipped-ipw": lambda: _ipw("clipped-ipw", clip),
        "snipw": _snipw,
        "dm": _dm,
        "dr": _dr,
        "sndr": _sndr,
        "switch-dr": lambda: _switch_dr(switch_lambda),
        "iips": _iips,
        "sips": _sips,
    }
    if name not in builders:
        raise ConfigError(f"estimators: unknown estimator {name!r} (choose from {', '.join(ESTIMATORS)})")
    return builders[name]()


def estimate(feedback: BanditFeedback, name: str, **params: float) -> float:
    """Shorthand: the point estimate of estimator ``name`` (``clip=`` / ``switch_lambda=`` as above)."""
    return make_estimator(name, **params).estimate(feedback)


def _threshold(key: str, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not number >= 0:  # also rejects NaN
        raise ConfigError(f"{key}: must be a number >= 0 (inf for none), got {value!r}")
    return number


def _per_row(sums: np.ndarray, rows: np.ndarray, slates: np.ndarray) -> np.ndarray:
    return sums[..., 0] / rows


def _per_slate(sums: np.ndarray, rows: np.ndarray, slates: np.ndarray) -> np.ndarray:
    return sums[..., 0] / slates


def _ratio(sums: np.ndarray, rows: np.ndarray, slates: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[..., 0] / sums[..., 1]


def _mean_plus_ratio(sums: np.ndarray, rows: np.ndarray, slates: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[..., 0] / rows + sums[..., 1] / sums[..., 2]


def _raw(fb: BanditFeedback) -> tuple[np.ndarray, np.ndarray]:
    return fb.importance_weight, fb.reward


_MODEL = ("q_hat", "dm_value")


def _ipw(name: str, clip: float) -> Estimator:
    def weights(fb: BanditFeedback) -> tuple[np.ndarray, np.ndarray]:
        return np.minimum(fb.importance_weight, clip), fb.reward

    return Estimator(name, lambda fb: (fb.reward * weights(fb)[0],), _per_row, weights=weights)


def _snipw() -> Estimator:
    def terms(fb: BanditFeedback) -> tuple[np.ndarray, ...]:
        w = fb.importance_weight
        return fb.reward * w, w

    return Estimator("snipw", terms, _ratio, weights=_raw)


def _dm() -> Estimator:
    return Estimator("dm", lambda fb: (fb.dm_value,), _per_row, requires=("dm_value",), uses_model=True)


def _dr() -> Estimator:
    def terms(fb: BanditFeedback) -> tuple[np.ndarray, ...]:
        return (fb.dm_value + fb.importance_weight * (fb.reward - fb.q_hat),)

    return Estimator("dr", terms, _per_row, requires=_MODEL, weights=_raw, uses_model=True)


def _sndr() -> Estimator:
    def terms(fb: BanditFeedback) -> tuple[np.ndarray, ...]:
        w = fb.importance_weight
        return fb.dm_value, w * (fb.reward - fb.q_hat), w

    return Estimator("sndr", terms, _mean_plus_ratio, requires=_MODEL, weights=_raw, uses_model=True)


def _switch_dr(switch_lambda: float) -> Estimator:
    def weights(fb: BanditFeedback) -> tuple[np.ndarray, np.ndarray]:
        w = fb.importance_weight
        return w * (w <= switch_lambda), fb.reward

    def terms(fb: BanditFeedback) -> tuple[np.ndarray, ...]:
        return (fb.dm_value + weights(fb)[0] * (fb.reward - fb.q_hat),)

    return Estimator("switch-dr", terms, _per_row, requires=_MODEL, weights=weights, uses_model=True)


def _iips() -> Estimator:
    return Estimator("iips", lambda fb: (fb.reward * fb.importance_weight,), _per_slate, weights=_raw)


def _slate_weight(fb: BanditFeedback) -> np.ndarray:
    return fb.target_slate_pscore / fb.slate_pscore


def _sips() -> Estimator:
    def weights(fb: BanditFeedback) -> tuple[np.ndarray, np.ndarray]:
        _, first_row = np.unique(fb.slate_index, return_index=True)
        slate_reward = np.bincount(fb.slate_index, weights=fb.reward, minlength=fb.n_slates)
        return _slate_weight(fb)[first_row], slate_reward

    return Estimator(
        "sips",
        lambda fb: (fb.reward * _slate_weight(fb),),
        _per_slate,
        requires=("slate_pscore", "target_slate_pscore"),
        weights=weights,
        unit="slates",
    )
