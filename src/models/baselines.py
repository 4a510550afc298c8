"""Non-neural baselines under the same dot-product contract, so the same evaluation (and export) applies.

They are fitted from the training events, not trained by gradient descent. The transition baseline keeps
a dense table up to 10,000 items; above that it keeps the observed transitions only and is scored by
lookup (:class:`SparseTransition`): the same scores, evaluated the same way, but with no bundle, since
a bundle's index needs a dense item table.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from shopformer.models.base import SequenceRecommender
from shopformer.models.ranking_metrics import ItemScorer

# A dense table is n x (n + 1) float32 (400 MB at 10,000 items) and its evaluation is a matmul of that
# width; above this size the sparse form gives the same scores in a fraction of the time and memory.
MAX_DENSE_TRANSITION_ITEMS = 10_000


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
    The table is dense; above 10,000 items ``Transition(n)`` is a :class:`SparseTransition` (as
    ``pathlib.Path()`` is a ``PosixPath``): the same scores from the observed transitions only.
    """

    def __new__(cls, n_items: int, **_: object) -> Transition:
        if cls is Transition and n_items > MAX_DENSE_TRANSITION_ITEMS:
            cls = SparseTransition
        return super().__new__(cls)

    def __init__(self, n_items: int, **_: object) -> None:
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


class SparseTransition(Transition):
    """:class:`Transition`'s scores for any catalogue size, from the observed transitions only (CSR).

    The query is the history's last item id (``[B, 1]``, exact in float32 below 2^24 items), and
    :meth:`item_scorer` scores the catalogue by lookup: ``count(last -> j) + popularity_j`` (scaled
    below one transition), as the dense table's dot product gives. Not exportable as a bundle.
    """

    exportable = False
    not_exportable_because = (
        "it is scored by lookup in a sparse table, and a bundle's index needs a dense one"
    )

    def __init__(self, n_items: int, **_: object) -> None:
        FittedBaseline.__init__(self, n_items, dim=1)  # not Transition's: no dense table
        self.register_buffer("row_starts", torch.zeros(n_items + 1, dtype=torch.long))
        self.register_buffer("columns", torch.zeros(0, dtype=torch.long))
        self.register_buffer("counts", torch.zeros(0))
        self.register_buffer("popularity", torch.zeros(n_items))

    def fit(self, train_items: np.ndarray, train_seq: np.ndarray) -> SparseTransition:
        n = self.n_items
        same_seq = train_seq[1:] == train_seq[:-1]
        prev, nxt = train_items[:-1][same_seq].astype(np.int64), train_items[1:][same_seq].astype(np.int64)
        pairs, counts = np.unique(prev * n + nxt, return_counts=True)  # sorted: row-major CSR order
        rows = pairs // n
        self.row_starts = torch.from_numpy(np.searchsorted(rows, np.arange(n + 1)).astype(np.int64))
        self.columns = torch.from_numpy(pairs % n)
        self.counts = torch.from_numpy(counts.astype(np.float32))
        popularity = self._popularity(train_items)
        self.popularity = torch.from_numpy((popularity / (popularity.max() + 1.0)).astype(np.float32))
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # The number of observed transitions is known only once fitted: take the saved sizes.
        for name in ("columns", "counts"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def encode(self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None):
        return item_ids[:, -1:].to(self.popularity.dtype)

    def item_vectors(self) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} has no item table: {self.not_exportable_because} (use item_scorer())"
        )

    def item_scorer(self) -> TransitionScorer:
        return TransitionScorer(self)


class TransitionScorer(ItemScorer):
    """Scores of a :class:`SparseTransition` for a chunk of the catalogue, as a dense block."""

    def __init__(self, model: SparseTransition) -> None:
        self.model = model
        self.shape = (model.n_items, 1)

    def _observed(self, queries: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(query row, item column, count) of every observed transition from each query's last item."""
        m = self.model
        last = queries[:, 0].long().to(m.row_starts.device)
        starts, lengths = m.row_starts[last], m.row_starts[last + 1] - m.row_starts[last]
        rows = torch.repeat_interleave(torch.arange(len(last), device=last.device), lengths)
        offsets = torch.arange(int(lengths.sum()), device=last.device) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths
        )
        at = torch.repeat_interleave(starts, lengths) + offsets
        return rows, m.columns[at], m.counts[at]

    def scores(self, queries: Tensor, start: int, stop: int) -> Tensor:
        block = self.model.popularity[start:stop].to(queries.device).expand(len(queries), -1).clone()
        rows, cols, counts = self._observed(queries)
        keep = (cols >= start) & (cols < stop)
        block[rows[keep].to(queries.device), (cols[keep] - start).to(queries.device)] += counts[keep].to(
            queries.device
        )
        return block

    def target_scores(self, queries: Tensor, targets: Tensor) -> Tensor:
        out = self.model.popularity[targets.to(self.model.popularity.device)].to(queries.device).clone()
        rows, cols, counts = self._observed(queries)
        hit = cols == targets.to(cols.device)[rows]
        out.index_add_(0, rows[hit].to(queries.device), counts[hit].to(queries.device))
        return out
