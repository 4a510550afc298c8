"""Non-neural baselines scored like every other model: a score per item for each history."""

from __future__ import annotations

import numpy as np

from shopformer.data.vocab import PAD


class MostPopular:
    """Scores items by their number of training events."""

    def fit(self, train_items: np.ndarray, n_items: int) -> MostPopular:
        self.counts = np.bincount(train_items, minlength=n_items).astype(np.float64)
        self.counts[PAD] = 0.0
        return self

    def score(self, histories: np.ndarray) -> np.ndarray:
        """[B, n_items] scores for left-padded histories [B, L]."""
        return np.broadcast_to(self.counts, (len(histories), len(self.counts))).copy()


class Transition:
    """First-order transitions: how often item j followed the history's last item in training.

    Popularity breaks ties (and answers for items never seen as a predecessor).
    """

    def fit(self, train_items: np.ndarray, train_seq: np.ndarray, n_items: int) -> Transition:
        same_seq = train_seq[1:] == train_seq[:-1]
        prev, nxt = train_items[:-1][same_seq], train_items[1:][same_seq]
        pair = prev.astype(np.int64) * n_items + nxt
        keys, counts = np.unique(pair, return_counts=True)
        rows = keys // n_items
        self.indptr = np.searchsorted(rows, np.arange(n_items + 1))
        self.cols = (keys % n_items).astype(np.int64)
        self.vals = counts.astype(np.float64)
        self.popularity = MostPopular().fit(train_items, n_items).counts
        self.n_items = n_items
        return self

    def score(self, histories: np.ndarray) -> np.ndarray:
        histories = np.asarray(histories)
        last = histories[:, -1]
        pop = self.popularity / (self.popularity.max() + 1.0)
        scores = np.broadcast_to(pop, (len(last), self.n_items)).copy()
        for row, item in enumerate(last):
            lo, hi = self.indptr[item], self.indptr[item + 1]
            scores[row, self.cols[lo:hi]] += self.vals[lo:hi]
        return scores
