"""The session-level split of journey data: whole sessions by start time, or time-blocked folds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shopformer.data.journey.labels import PARTS, UNUSED, window_end_seconds
from shopformer.errors import DataError


def _cutoff(explicit: Any, starts: np.ndarray, q: float) -> int:
    if explicit is not None:
        return window_end_seconds(explicit, starts)
    return int(np.quantile(starts, q)) if len(starts) else 0


@dataclass(frozen=True)
class JourneySplit:
    """Whole sessions by start time: train before ``valid_cutoff``, valid, then test.

    Cut-offs are explicit (unix seconds or date-time strings) or the quantiles of session start
    times at ``1 - test_fraction - valid_fraction`` and ``1 - test_fraction``. With ``drop_tail``,
    sessions starting within ``censor_minutes`` of the window end belong to no part: their
    outcomes are mostly unknown, and they lie after the test period.

    ``folds`` >= 2 makes a time-blocked cross-validation split instead: the sessions, by start
    time, fall into ``folds`` equal blocks; block ``fold`` is the test part, the ``valid_fraction``
    of sessions just before it (just after it, for the first block) is the validation part, and
    the rest trains. Over ``fold = 0 .. folds - 1`` every session is tested once, which multiplies
    the test labels of a short log by ``folds``; the last fold is the default split with
    ``test_fraction = 1 / folds``. ``test_fraction`` and the cut-offs are not used then.
    """

    valid_fraction: float = 0.1
    test_fraction: float = 0.2
    valid_cutoff: Any = None
    test_cutoff: Any = None
    drop_tail: bool = True
    folds: int = 0
    fold: int = 0

    def assign(
        self, session_start_ts: np.ndarray, window_end: int, censor_minutes: float
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Part per session (0 train, 1 valid, 2 test, -1 unused) and facts for the run report."""
        self._check()
        starts = np.asarray(session_start_ts, dtype=np.int64)
        tail = window_end - int(censor_minutes * 60)
        kept = starts < tail if self.drop_tail else np.ones(len(starts), dtype=bool)
        if self.folds:
            part, cuts = self._fold_parts(starts, kept)
        else:
            test_cut = _cutoff(self.test_cutoff, starts[kept], 1.0 - self.test_fraction)
            valid_cut = _cutoff(
                self.valid_cutoff, starts[kept], 1.0 - self.test_fraction - self.valid_fraction
            )
            if valid_cut > test_cut:
                raise DataError(f"journey split: valid cut-off {valid_cut} is after test cut-off {test_cut}")
            part = np.where(
                starts >= test_cut, PARTS["test"], np.where(starts >= valid_cut, PARTS["valid"], 0)
            )
            cuts = {"valid_cutoff_utc": valid_cut, "test_cutoff_utc": test_cut}
        part = np.where(kept, part, UNUSED).astype(np.int8)
        facts = {
            **{name: str(pd.Timestamp(value, unit="s", tz="UTC")) for name, value in cuts.items()},
            "unused_from_utc": str(pd.Timestamp(tail, unit="s", tz="UTC")) if self.drop_tail else None,
            **({"folds": self.folds, "fold": self.fold} if self.folds else {}),
            **{f"{name}_sessions": int((part == code).sum()) for name, code in PARTS.items()},
            "unused_sessions": int((part == UNUSED).sum()),
        }
        return part, facts

    def _check(self) -> None:
        if not 0 < self.valid_fraction < 1:
            raise DataError(f"journey split: valid_fraction must be in (0, 1), got {self.valid_fraction}")
        if not self.folds:
            if not 0 < self.test_fraction < 1:
                raise DataError(f"journey split: test_fraction must be in (0, 1), got {self.test_fraction}")
            if self.valid_fraction + self.test_fraction >= 1:
                raise DataError("journey split: valid_fraction + test_fraction must be < 1")
            return
        if self.folds < 2 or not 0 <= self.fold < self.folds:
            raise DataError(
                f"journey split: folds must be >= 2 and fold in [0, folds), got folds={self.folds}, "
                f"fold={self.fold}"
            )
        if self.valid_cutoff is not None or self.test_cutoff is not None:
            raise DataError("journey split: folds and explicit cut-offs exclude each other")
        if self.valid_fraction + 1.0 / self.folds >= 1:
            raise DataError(
                f"journey split: valid_fraction {self.valid_fraction} + the test block 1/{self.folds} "
                "leave no training sessions"
            )

    def _fold_parts(self, starts: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
        """Parts of fold ``fold``: its test block, the validation sessions beside it, training."""
        k, size = self.fold, 1.0 / self.folds
        low, high = k * size, (k + 1) * size
        test_from = _cutoff(None, starts[kept], low) if k else np.iinfo(np.int64).min
        test_to = _cutoff(None, starts[kept], high) if k < self.folds - 1 else np.iinfo(np.int64).max
        if k:  # validation just before the test block
            valid_from, valid_to = _cutoff(None, starts[kept], max(low - self.valid_fraction, 0.0)), test_from
        else:  # the first block has nothing before it: validation just after
            valid_from, valid_to = test_to, _cutoff(None, starts[kept], high + self.valid_fraction)
        test = (starts >= test_from) & (starts < test_to)
        valid = (starts >= valid_from) & (starts < valid_to) & ~test
        part = np.where(test, PARTS["test"], np.where(valid, PARTS["valid"], PARTS["train"]))
        cuts = {"valid_from_utc": valid_from, "valid_to_utc": valid_to}
        if k:
            cuts["test_from_utc"] = test_from
        if k < self.folds - 1:
            cuts["test_to_utc"] = test_to
        return part, cuts
