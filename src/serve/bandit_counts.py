"""Impressions and clicks per item, the counts behind Thompson sampling's Beta posteriors.

The server adds every shown item and every click it is told about (``POST /feedback``); at start it
reads them back from the impression and feedback logs, so the posteriors survive a restart. Items
are keyed by their raw id as text, the way the logs store them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

import numpy as np
import pandas as pd


class BanditCounts:
    """Thread-safe per-item impression and click counts."""

    def __init__(self) -> None:
        self._shown: Counter[str] = Counter()
        self._clicks: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record_shown(self, items: Iterable[object]) -> None:
        keys = list(map(str, items))
        with self._lock:
            self._shown.update(keys)

    def record_click(self, item: object) -> None:
        with self._lock:
            self._clicks[str(item)] += 1

    def counts(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(impressions, clicks) of each raw id, as float arrays."""
        keys = [str(item) for item in ids]
        with self._lock:
            shown = np.array([self._shown.get(key, 0) for key in keys], dtype=np.float64)
            clicks = np.array([self._clicks.get(key, 0) for key in keys], dtype=np.float64)
        return shown, np.minimum(clicks, shown)

    def totals(self) -> tuple[int, int]:
        with self._lock:
            return sum(self._shown.values()), sum(self._clicks.values())

    def add_logs(self, impressions: pd.DataFrame | None, feedback: pd.DataFrame | None) -> None:
        """Add the shown items of an impression log and the clicks of a feedback log."""
        if impressions is not None and len(impressions):
            self.record_shown(impressions["shown"].explode().dropna())
        if feedback is not None and len(feedback):
            clicks = feedback.loc[feedback["event"] == "click", "item_id"].astype(str).value_counts()
            with self._lock:
                self._clicks.update(clicks.to_dict())
