"""Logged bandit feedback: one row per shown (item, position), with both policies' propensities.

The representation is sparse on purpose: a row carries the logging and target probability of the one
(item, position) that was shown, plus (for the direct method) the reward model's value at that row, so
nothing here ever grows with the catalogue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from shopformer.errors import ConfigError, DataError

REQUIRED = ("reward", "position", "pscore", "slate_id", "target_pscore")
OPTIONAL = (
    "item",
    "q_hat",
    "dm_value",
    "slate_pscore",
    "target_slate_pscore",
    "unsupported_mass",
)
# (low, high, low bound open?): a logging propensity of 0 means the row could not have been logged.
_RANGES = {
    "pscore": (0.0, 1.0, True),
    "slate_pscore": (0.0, 1.0, True),
    "target_pscore": (0.0, 1.0, False),
    "target_slate_pscore": (0.0, 1.0, False),
    "unsupported_mass": (0.0, 1.0, False),
}
_FLOATS = ("reward", "pscore", "target_pscore", "q_hat", "dm_value", *_RANGES)


@dataclass(frozen=True, eq=False)
class BanditFeedback:
    """Validated, read-only arrays of logged feedback (all of one length, one entry per impression).

    ``reward``: click/purchase 0/1 or revenue; ``position``: 0-based slot; ``pscore``: the logging
    policy's marginal probability of this item at this position in this context, in (0, 1];
    ``slate_id``: shared by the rows of one request; ``target_pscore``: the target policy's marginal
    probability of the same (item, position), in [0, 1]. Optional: ``item`` (ids, for fitting a reward
    model), ``q_hat`` (the reward model at the logged row), ``dm_value`` (the reward model's expectation
    under the target at that slot), ``slate_pscore`` / ``target_slate_pscore`` (probability of the
    whole ranked list, repeated on each of its rows) and ``unsupported_mass`` (the target's probability,
    at this slot, on items the logging policy never shows there).
    """

    reward: np.ndarray
    position: np.ndarray
    pscore: np.ndarray
    slate_id: np.ndarray
    target_pscore: np.ndarray
    item: np.ndarray | None = None
    q_hat: np.ndarray | None = None
    dm_value: np.ndarray | None = None
    slate_pscore: np.ndarray | None = None
    target_slate_pscore: np.ndarray | None = None
    unsupported_mass: np.ndarray | None = None

    def __post_init__(self) -> None:
        given = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        for name, array in validate(given).items():
            object.__setattr__(self, name, array)

    @classmethod
    def from_frame(
        cls, df: pd.DataFrame, *, columns: Mapping[str, str] | None = None, source: str = "feedback"
    ) -> BanditFeedback:
        """Build from a frame; ``columns`` maps field names to the frame's column names where they differ.

        Optional fields are taken when their column is present. Raises :class:`DataError` naming the
        column (and ``source``) for a missing required column, NaN, or a propensity out of range.
        """
        known = REQUIRED + OPTIONAL
        unknown = sorted(set(columns or {}) - set(known))
        if unknown:
            raise ConfigError(f"columns: unknown field {unknown[0]!r} (fields: {', '.join(known)})")
        labels = {name: name for name in known} | dict(columns or {})
        missing = [labels[name] for name in REQUIRED if labels[name] not in df.columns]
        if missing:
            have = ", ".join(map(str, df.columns[:12])) + (", ..." if len(df.columns) > 12 else "")
            have = have or "no columns"
            raise DataError(f"{source}: missing column {missing[0]!r} (the frame has: {have})")
        arrays = {name: df[labels[name]].to_numpy() for name in known if labels[name] in df.columns}
        return cls(**validate(arrays, labels=labels, source=source))

    @property
    def n_rows(self) -> int:
        """Number of impressions (rows)."""
        return int(self.reward.shape[0])

    @cached_property
    def slate_index(self) -> np.ndarray:
        """Each row's slate as a code 0..n_slates-1 (in order of first appearance)."""
        codes = pd.factorize(self.slate_id, sort=False)[0].astype(np.int64)
        codes.setflags(write=False)
        return codes

    @property
    def n_slates(self) -> int:
        """Number of distinct requests (slates)."""
        return int(self.slate_index.max()) + 1 if self.n_rows else 0

    @cached_property
    def importance_weight(self) -> np.ndarray:
        """Per-row marginal importance weight ``target_pscore / pscore`` (read-only)."""
        weight = self.target_pscore / self.pscore
        weight.setflags(write=False)
        return weight


def validate(
    arrays: Mapping[str, Any], *, labels: Mapping[str, str] | None = None, source: str = "feedback"
) -> dict[str, np.ndarray]:
    """Checked, read-only copies of the given field arrays; a problem raises :class:`DataError`.

    ``labels`` maps a field to the column name the user knows it by (used in messages only).
    """
    label = {name: name for name in arrays} | dict(labels or {})
    out: dict[str, np.ndarray] = {}
    for name, values in arrays.items():
        where = f"{source}: column {label[name]!r}"
        if name in _FLOATS:
            out[name] = _checked_floats(values, where, _RANGES.get(name))
        elif name == "position":
            out[name] = _checked_positions(values, where)
        else:
            out[name] = _checked_ids(values, where)
    _check_lengths(out, label, source)
    codes = pd.factorize(out["slate_id"], sort=False)[0]
    _check_unique_positions(codes, out, source)
    for name in ("slate_pscore", "target_slate_pscore"):
        if name in out:
            _check_constant_per_slate(codes, out[name], out["slate_id"], f"{source}: column {label[name]!r}")
    for array in out.values():
        array.setflags(write=False)
    return out


def _checked_floats(values: Any, where: str, bounds: tuple[float, float, bool] | None) -> np.ndarray:
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        series = pd.Series(np.asarray(values, dtype=object).ravel())
        bad = pd.to_numeric(series, errors="coerce").isna() & series.notna()
        raise DataError(
            f"{where} is not numeric: {int(bad.sum())} of {len(series)} rows, e.g. {series[bad].iloc[0]!r}"
        ) from None
    if array.ndim != 1:
        raise DataError(f"{where} must be one value per row, got an array of shape {array.shape}")
    _raise_for(~np.isfinite(array), array, where, "missing or not finite (NaN/inf)")
    if bounds is not None:
        low, high, open_low = bounds
        outside = (array <= low if open_low else array < low) | (array > high)
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        why = "a logging propensity of 0 means the row could not have been logged" if open_low else ""
        _raise_for(outside, array, where, f"outside {interval}", why)
    return array


def _checked_positions(values: Any, where: str) -> np.ndarray:
    array = _checked_floats(values, where, None)
    _raise_for((array < 0) | (array != np.round(array)), array, where, "not a 0-based integer position")
    return array.astype(np.int64)


def _checked_ids(values: Any, where: str) -> np.ndarray:
    array = np.array(values)
    if array.ndim != 1:
        raise DataError(f"{where} must be one value per row, got an array of shape {array.shape}")
    _raise_for(np.asarray(pd.isna(array)), array, where, "missing (NaN/None)")
    return array


def _raise_for(bad: np.ndarray, array: np.ndarray, where: str, what: str, why: str = "") -> None:
    """Raise naming the count of bad rows and the first one, when any row is bad."""
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        count = f"{int(bad.sum()):,} of {len(array):,} rows"
        raise DataError(
            f"{where} has {count} {what}, e.g. {_show(array[row])} at row {row}{why and ': ' + why}"
        )


def _show(value: Any) -> str:
    """A value as the user wrote it (no numpy scalar wrapper)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _check_lengths(arrays: Mapping[str, np.ndarray], label: Mapping[str, str], source: str) -> None:
    missing = [name for name in REQUIRED if name not in arrays]
    if missing:
        raise DataError(f"{source}: missing column {label.get(missing[0], missing[0])!r}")
    n = len(arrays["reward"])
    if n == 0:
        raise DataError(f"{source}: no rows")
    for name, array in arrays.items():
        if len(array) != n:
            raise DataError(
                f"{source}: column {label[name]!r} has {len(array):,} rows but {label['reward']!r} has {n:,}"
            )


def _check_unique_positions(codes: np.ndarray, arrays: Mapping[str, np.ndarray], source: str) -> None:
    """Each request shows one item per position; a repeated (slate, position) is usually a bad join."""
    position = arrays["position"]
    key = codes.astype(np.int64) * (int(position.max()) + 1) + position
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = first[counts > 1]
        row = int(dup[0])
        raise DataError(
            f"{source}: {int((counts[counts > 1] - 1).sum()):,} rows repeat a (slate_id, position) pair, "
            f"e.g. slate_id {_show(arrays['slate_id'][row])} position {int(position[row])}: "
            "a request shows one item per position"
        )


def _check_constant_per_slate(
    codes: np.ndarray, values: np.ndarray, slate_id: np.ndarray, where: str
) -> None:
    _, first_row = np.unique(codes, return_index=True)  # codes are 0..n_slates-1, so this is per code
    first = values[first_row]
    differ = values != first[codes]
    if differ.any():
        row = int(np.flatnonzero(differ)[0])
        raise DataError(
            f"{where} must be one value per slate (the whole list's probability), but slate_id "
            f"{_show(slate_id[row])} has {_show(values[row])} and {_show(first[codes[row]])}"
        )
