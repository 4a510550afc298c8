"""Top-k retrieval after business rules: over-fetch from FAISS, widen the search until the answer is sure.

Retrieval over-fetches (k + history + room for filters) and widens the FAISS search geometrically,
up to the whole catalogue, until k eligible items are found and no unfetched item could outrank
them through a boost; with a flat index the answer equals exact top-k of the boosted scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from shopformer.serve.index import search
from shopformer.serve.rules import Rules, in_sorted

WIDEN = 4  # growth factor of the candidate list when rules leave fewer than k items


@dataclass
class Plan:
    """What one query needs from retrieval: k, the items to exclude, the rules."""

    k: int
    seen: np.ndarray | None
    rules: Rules | None

    def initial_fetch(self) -> int:
        seen = 0 if self.seen is None else self.seen.size
        room = self.k + 32 if self.rules is not None else 0
        return self.k + seen + room

    def select(
        self, ids: np.ndarray, scores: np.ndarray, exhaustive: bool
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The top-k eligible candidates, or None when a wider search could change the answer."""
        if self.rules is not None:
            keep, adjusted = self.rules.apply(ids, scores, self.seen)
        else:
            keep = ids > 0
            if self.seen is not None and self.seen.size:
                keep &= ~in_sorted(ids, self.seen)
            adjusted = scores
        eligible = np.flatnonzero(keep)
        top = eligible[np.argsort(-adjusted[eligible], kind="stable")[: self.k]]
        # FAISS leaves slots empty (id 0) only when it has no more items to give.
        if exhaustive or (ids == 0).any():
            return ids[top], adjusted[top]
        if top.size < self.k:
            return None
        boost = self.rules.max_boost if self.rules is not None else 0.0
        if boost > 0 and adjusted[top[-1]] < scores[-1] + boost:
            return None  # an unfetched item (score <= scores[-1]) could still outrank the k-th
        return ids[top], adjusted[top]


def retrieve(
    index: faiss.Index, queries: np.ndarray, plans: Sequence[Plan], faiss_threads: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Top items per query after rules: one FAISS search for all, then wider ones where needed."""
    total = index.ntotal
    fetch = np.array([min(total, p.initial_fetch()) for p in plans], dtype=np.int64)
    results: list[Any] = [None] * len(plans)
    pending = np.arange(len(plans))
    # OpenMP's thread count is per calling thread: a batcher or thread-pool thread starts with the
    # machine's default, and idle OpenMP workers spin (measured: 2x the server CPU per request).
    faiss.omp_set_num_threads(faiss_threads)
    while pending.size:
        depth = int(fetch[pending].max())
        scores, ids = search(index, queries[pending], depth)
        again = []
        for row, i in enumerate(pending):
            found = plans[i].select(ids[row], scores[row], exhaustive=depth >= total)
            if found is None:
                fetch[i] = min(total, depth * WIDEN)
                again.append(i)
            else:
                results[i] = found
        pending = np.array(again, dtype=np.int64)
    return results
