"""Splits: mark every event as a training event, a validation / test target, or context only.

A split is a role per event. Training events are always a prefix of their
sequence, so training never sees an event at or after any target of that sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shopformer.errors import DataError

TRAIN, VALID, TEST, CONTEXT = 0, 1, 2, 3


class Split:
    """Base class: ``assign`` returns (roles int8 per event, facts for meta.json)."""

    needs_timestamps = False

    def assign(
        self, seq: np.ndarray, ts: np.ndarray, item: np.ndarray, has_timestamps: bool
    ) -> tuple[np.ndarray, dict[str, Any]]:
        raise NotImplementedError


def _positions(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each event within its sequence, and that sequence's length."""
    starts = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]])
    lengths = np.diff(np.r_[starts, len(seq)])
    pos = np.arange(len(seq)) - np.repeat(starts, lengths)
    return pos, np.repeat(lengths, lengths)


@dataclass
class LeaveOneOut(Split):
    """Last event of each sequence is the test target, the one before it the validation target.

    Sequences shorter than ``min_length`` stay whole in training (as in SASRec's code).
    """

    min_length: int = 3

    def assign(self, seq, ts, item, has_timestamps):
        pos, length = _positions(seq)
        roles = np.full(len(seq), TRAIN, dtype=np.int8)
        long_enough = length >= max(self.min_length, 3)
        roles[long_enough & (pos == length - 1)] = TEST
        roles[long_enough & (pos == length - 2)] = VALID
        return roles, {"split": "leave_one_out", "min_length": self.min_length}


@dataclass
class Temporal(Split):
    """Global time cut-offs: events before ``valid_cutoff`` train; later ones are targets.

    Cut-offs are explicit (unix seconds or a date-time string), or ``*_days``
    before the last event, or else the ``*_fraction`` quantiles of event times.
    ``targets='all'`` evaluates every event in a period (session-rec protocol),
    ``'first'`` only the first per sequence. A target needs at least one earlier
    event in its sequence; with ``drop_cold_targets`` a target item never seen in
    training becomes context (counted in meta.json).
    """

    valid_cutoff: Any = None
    test_cutoff: Any = None
    valid_days: float | None = None
    test_days: float | None = None
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    targets: str = "all"
    drop_cold_targets: bool = True
    needs_timestamps = True

    def cutoffs(self, ts: np.ndarray) -> tuple[int, int]:
        """(valid, test) cut-offs in unix seconds."""
        for name in ("valid_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise DataError(f"temporal split: {name} must be in (0, 1)")
        test = _cutoff(self.test_cutoff, self.test_days, int(ts.max()), ts, 1.0 - self.test_fraction)
        valid = _cutoff(
            self.valid_cutoff, self.valid_days, test, ts, 1.0 - self.test_fraction - self.valid_fraction
        )
        if not valid <= test:
            raise DataError(f"temporal split: valid cut-off {valid} is after test cut-off {test}")
        return valid, test

    def assign(self, seq, ts, item, has_timestamps):
        if not has_timestamps:
            raise DataError(
                "split=temporal needs real timestamps, but this dataset has only an order "
                "(ordinal timestamps); use split=leave_one_out"
            )
        if self.targets not in ("all", "first"):
            raise DataError(f"temporal split: targets must be 'all' or 'first', got {self.targets!r}")
        valid_cut, test_cut = self.cutoffs(ts)
        pos, _ = _positions(seq)
        roles = np.full(len(seq), TRAIN, dtype=np.int8)
        period = np.where(ts >= test_cut, TEST, np.where(ts >= valid_cut, VALID, TRAIN))
        roles[period != TRAIN] = CONTEXT
        candidate = (period != TRAIN) & (pos > 0)
        if self.targets == "first":
            frame = pd.DataFrame({"seq": seq, "period": period, "cand": candidate})
            first = frame[candidate].groupby(["seq", "period"], sort=False).cumcount() == 0
            keep = np.zeros(len(seq), dtype=bool)
            keep[first.index[first.to_numpy()]] = True
            candidate &= keep
        cold = np.zeros(len(seq), dtype=bool)
        if self.drop_cold_targets:
            seen = np.zeros(int(item.max()) + 1, dtype=bool)
            seen[item[period == TRAIN]] = True
            cold = candidate & ~seen[item]
            candidate &= ~cold
        roles[candidate] = period[candidate]
        facts = {
            "split": "temporal",
            "valid_cutoff": valid_cut,
            "test_cutoff": test_cut,
            "valid_cutoff_utc": str(pd.Timestamp(valid_cut, unit="s", tz="UTC")),
            "test_cutoff_utc": str(pd.Timestamp(test_cut, unit="s", tz="UTC")),
            "targets": self.targets,
            "cold_targets_dropped": int(cold.sum()),
        }
        return roles, facts


def _cutoff(explicit: Any, days: float | None, reference: int, ts: np.ndarray, q: float) -> int:
    """An explicit time, or ``days`` before ``reference``, or the ``q`` quantile of times."""
    if explicit is not None:
        if isinstance(explicit, int | float | np.integer):
            return int(explicit)
        try:
            return int(pd.Timestamp(str(explicit), tz="UTC").timestamp())
        except ValueError:
            raise DataError(f"temporal split: cannot parse cut-off {explicit!r}") from None
    if days is not None:
        return reference - int(days * 86400)
    return int(np.quantile(ts, q))
