"""Non-neural baselines under the same dot-product contract, so the same evaluation (and export) applies.

They are fitted from the training events, not trained by gradient descent.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from shopformer.models.base import SequenceRecommender

MAX_DENSE_TRANSITION_ITEMS = 50_000


class FittedBaseline(SequenceRecommender):
    """A model whose item table comes from counting training events (``fit``)."""

    trainable = False

    def fit(self, train_items: np.ndarray, train_seq: np.ndarray) -> FittedBaseline:
        raise NotImplementedError

    def forward(self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None):
        raise RuntimeError(f"{type(self).__name__} is fitted by counting, not trained")

    def _popularity(self, train_items: np.ndarray) -> np.ndarray:
        counts = np.bincount(train_items, minlength=self.n_items).astype(np.float64)
        counts[0] = 0.0
        return counts


class MostPopular(FittedBaseline):
    """Scores items by their number of training events: ``q = [1]``, ``E[i] = [count_i]``."""

    def __init__(self, n_items: int, **_: object) -> None:
        super().__init__(n_items, dim=1)
        self.register_buffer("table", torch.zeros(n_items, 1))

    def fit(self, train_items: np.ndarray, train_seq: np.ndarray) -> MostPopular:
        counts = self._popularity(train_items)
        self.table = torch.as_tensor(counts / max(counts.max(), 1.0), dtype=torch.float32)[:, None]
        return self

    def encode(self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None):
        return torch.ones(item_ids.shape[0], 1, dtype=self.table.dtype, device=item_ids.device)

    def item_vectors(self) -> Tensor:
        return self.table


class Transition(FittedBaseline):
    """First-order transitions: how often item j followed the history's last item in training.

    ``q = [onehot(last item), 1]``, ``E[j] = [T[:, j], popularity_j]``: popularity (scaled
    below one transition) breaks ties and answers for items never seen as a predecessor.
    The table is dense, so catalogues above 50,000 items are refused.
    """

    def __init__(self, n_items: int, **_: object) -> None:
        if n_items > MAX_DENSE_TRANSITION_ITEMS:
            raise ValueError(
                f"the transition baseline keeps a dense {n_items}x{n_items} table; "
                f"at most {MAX_DENSE_TRANSITION_ITEMS:,} items are supported"
            )
        super().__init__(n_items, dim=n_items + 1)
        self.register_buffer("table", torch.zeros(n_items, n_items + 1))

    def fit(self, train_items: np.ndarray, train_seq: np.ndarray) -> Transition:
        n = self.n_items
        same_seq = train_seq[1:] == train_seq[:-1]
        prev, nxt = train_items[:-1][same_seq].astype(np.int64), train_items[1:][same_seq].astype(np.int64)
        counts = np.bincount(prev * n + nxt, minlength=n * n).reshape(n, n).astype(np.float32)
        popularity = self._popularity(train_items)
        table = np.empty((n, n + 1), dtype=np.float32)
        table[:, :n] = counts.T
        table[:, n] = popularity / (popularity.max() + 1.0)
        self.table = torch.from_numpy(table)
        return self

    def encode(self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None):
        # Written with comparisons and concatenation (no in-place indexing): exports to ONNX with a
        # dynamic batch. Column 0 stays zero: an empty history has no last item.
        items = torch.arange(1, self.n_items, device=item_ids.device)
        hot = (item_ids[:, -1:] == items).to(self.table.dtype)
        edge = torch.ones_like(hot[:, :1])
        return torch.cat([edge * 0.0, hot, edge], dim=1)

    def item_vectors(self) -> Tensor:
        return self.table
