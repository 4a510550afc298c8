"""The service's two logs: every answer (impressions) and every user event on it (feedback).

``log_dir/impressions`` and ``log_dir/feedback`` hold Parquet segments written off the request path
(:class:`~shopformer.serve.event_log.EventLog`, by a thread; or, with ``writer="process"``, the
service's default, by a child process: :mod:`shopformer.serve.log_process`). The service keeps the
ids of recent requests with the items they showed, so feedback for an unknown request or an item it
did not show is counted (and still logged: a late click after a restart is real). Thompson sampling's
counts are read back from the logs at start and kept up to date from then on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shopformer.errors import ConfigError, DataError
from shopformer.serve.bandit_counts import BanditCounts
from shopformer.serve.event_log import EventLog, read_log
from shopformer.serve.exploration import Ask, Shown
from shopformer.serve.log_process import ProcessEventLog
from shopformer.serve.log_schemas import FEEDBACK_SCHEMA, IMPRESSION_SCHEMA, feedback_row, filters_json

log = logging.getLogger("shopformer.serve")
RECENT_REQUESTS = 200_000  # request ids remembered for matching feedback
WRITERS = ("thread", "process")  # where the logs' files are written (see serve/log_process.py)


class ServingLogs:
    """Impression and feedback logs of one service, with the counts they imply."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        flush_interval: float = 1.0,
        rotate_bytes: int = 64 << 20,
        rotate_seconds: float = 3600.0,
        writer: str = "thread",
    ) -> None:
        if writer not in WRITERS:
            raise ConfigError(f"log writer: {writer!r} is not one of {', '.join(WRITERS)}")
        self.directory = Path(directory)
        options = {
            "flush_interval": flush_interval,
            "rotate_bytes": rotate_bytes,
            "rotate_seconds": rotate_seconds,
        }
        log_class = ProcessEventLog if writer == "process" else EventLog
        self.impressions = log_class(
            self.directory / "impressions", IMPRESSION_SCHEMA, kind="impressions", **options
        )
        self.feedback = log_class(self.directory / "feedback", FEEDBACK_SCHEMA, kind="feedback", **options)
        self.counts = BanditCounts()
        self.counts.add_logs(*self._previous())
        # tuples of strings, not sets: untracked by the cyclic GC after its first pass (see item_ids)
        self._recent: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self.feedback_counts = dict.fromkeys(("matched", "unknown_request", "item_not_shown"), 0)
        for recovery in self.impressions.recovered + self.feedback.recovered:
            log.warning("%s", recovery.message)

    def _previous(self) -> tuple[Any, Any]:
        found = []
        for kind in ("impressions", "feedback"):
            try:
                found.append(read_log(self.directory / kind, kind).to_pandas())
            except DataError:  # no segment yet
                found.append(None)
        return found[0], found[1]

    def record(
        self,
        ask: Ask,
        shown: Shown,
        model: tuple[str, str],
        filters: Mapping[str, Any] | None,
        arm: str | None,
    ) -> None:
        """Log one answer (never blocks: the row is queued for the writer).

        The row is built as a tuple in :data:`IMPRESSION_SCHEMA`'s order, without
        :func:`impression_row`'s dict and checks: every value comes from our own policy, and this runs
        on the requests' thread for every answer (tests keep the two equal)."""
        if shown.items:
            ids, scores, propensities = zip(*shown.items, strict=True)
        else:
            ids = scores = propensities = ()
        self.impressions.append_values(
            (
                shown.request_id,
                time.time(),
                str(model[0]),
                str(model[1]),
                shown.policy,
                shown.policy_version,
                arm,
                ask.unit or None,
                tuple(ask.session.items),
                tuple(shown.candidates) or ids,
                tuple(shown.candidate_scores) or scores,
                ids,
                propensities,
                shown.slate_propensity,
                filters_json(filters),
                int(ask.session.k),
            )
        )
        keys = tuple(map(str, ids))  # ids as the logs and the counts key them
        self.counts.record_shown(keys)
        with self._lock:
            self._recent[shown.request_id] = keys
            if len(self._recent) > RECENT_REQUESTS:
                self._recent.popitem(last=False)

    def record_feedback(self, request_id: str, item_id: Any, event: str, revenue: float | None) -> str:
        """Log one user event; returns ``matched``, ``unknown_request`` or ``item_not_shown``."""
        row = feedback_row(request_id=request_id, item_id=item_id, event=event, revenue=revenue)
        with self._lock:
            shown = self._recent.get(row["request_id"])
        status = (
            "unknown_request" if shown is None else "matched" if row["item_id"] in shown else "item_not_shown"
        )
        with self._lock:
            self.feedback_counts[status] += 1
        self.feedback.append(row)
        if event == "click" and status == "matched":
            self.counts.record_click(row["item_id"])
        return status

    def stats(self) -> dict[str, Any]:
        return {
            "impressions": self.impressions.stats(),
            "feedback": self.feedback.stats(),
            "feedback_matching": dict(self.feedback_counts),
        }

    def close(self) -> None:
        """Write everything queued (a clean shutdown loses no row)."""
        self.impressions.close()
        self.feedback.close()
