"""Full-ranking evaluation in torch: every query is ranked against the whole catalogue, chunk by chunk.

The tie rule and the metric definitions are those of the NumPy reference in
:mod:`shopformer.models.ranking_reference`: every other item whose score is ``>=`` the target's ranks
above it, and column 0 (the padding id) never counts. Scores are ``q @ E[i]`` computed in float32
whatever the input dtype. Ranks are exact given the float32 scores; note only that BLAS may round a dot
product differently (last bit) depending on the chunk's shape, so a *near-exact* tie can resolve
differently from a single full ``q @ E.T``. The target's own column is excluded by index, so it never
counts against itself.

Exclusion of already-seen items (``exclude_seen=True`` / ``seen=`` given): items listed in a user's
``seen`` row are removed from that user's ranking (they neither count above the target nor appear in the
top-K), except the target itself, which always stays rankable (re-purchases are legitimate targets). The
padding id 0 is always removed, so ``seen`` may be left- or right-padded with 0.

Business metrics (revenue, in-stock share, category diversity, novelty @K; defined in
:mod:`shopformer.models.business_metrics`) are accumulated beside accuracy when the accumulator is
given the catalogue's :class:`~shopformer.models.business_metrics.ItemFacts`; each is reported only
where its attribute exists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from shopformer.models.business_metrics import LIST_METRICS, ItemFacts, list_sums

__all__ = ["FullRankingMetrics", "ItemScorer", "ranks_against_catalogue"]


class ItemScorer:
    """A catalogue ranked without a dense ``[n_items, D]`` table (e.g. a sparse transition table):
    ``shape`` is ``(n_items, D)`` of the queries it takes; ``scores`` gives a chunk of the catalogue's
    scores and ``target_scores`` each query's own target's, both float32 on the queries' device and
    equal where they overlap, so a target's rank is exact."""

    shape: tuple[int, int]

    def scores(self, queries: Tensor, start: int, stop: int) -> Tensor:
        """[B, stop - start]: every query's score of items ``start..stop-1``."""
        raise NotImplementedError

    def target_scores(self, queries: Tensor, targets: Tensor) -> Tensor:
        """[B]: each query's score of its own target."""
        raise NotImplementedError


def _target_scores(queries: Tensor, items: Tensor | ItemScorer, targets: Tensor) -> Tensor:
    """Float32 score of each query's own target.

    Taken from the diagonal of a matrix product rather than an elementwise sum so that it goes through a
    GEMM like the chunk scores it is compared with, which for realistic batch sizes gives bit-identical
    rounding (exact ties, e.g. duplicate embeddings, then stay ties).
    """
    if isinstance(items, ItemScorer):
        return items.target_scores(queries, targets)
    t_items = items[targets.to(items.device)].to(queries.device, torch.float32)
    return (queries @ t_items.T).diagonal()


def _chunk_scores(queries: Tensor, items: Tensor | ItemScorer, start: int, stop: int) -> Tensor:
    """[B, stop - start] float32 scores of a chunk of the catalogue (a fresh tensor: it is edited)."""
    if isinstance(items, ItemScorer):
        return items.scores(queries, start, stop)
    return queries @ items[start:stop].to(queries.device, torch.float32).T


@torch.no_grad()
def ranks_against_catalogue(
    queries: Tensor,
    items: Tensor | ItemScorer,
    targets: Tensor,
    seen: Tensor | None = None,
    chunk_size: int = 65536,
    k_max: int = 100,
) -> tuple[Tensor, Tensor]:
    """0-based rank of each target among items 1..n_items-1, and each query's top-``k_max`` item ids.

    ``queries`` [B, D], ``items`` [n_items, D] (row 0 = padding), ``targets`` [B] int64 in 1..n_items-1,
    ``seen`` optional int64 [B, S] padded with 0: if given, those items (other than the target) are
    removed from the ranking. The catalogue is scored ``chunk_size`` rows at a time, so at most a
    [B, chunk_size] score block exists at once; a running top-``k_max`` is merged across chunks. ``items``
    may live on another device than ``queries`` (e.g. a CPU table): each chunk is moved to the queries.
    ``items`` may also be an :class:`ItemScorer` (a catalogue scored by lookup), ranked the same way.

    Top-K slots that no rankable item fills (``k_max`` larger than the catalogue left after exclusion) hold
    the padding id 0. Ties at the K-th place are broken arbitrarily (``torch.topk``); ranks are exact.
    """
    # Scores stay float32 under an autocast region too (Lightning's bf16-mixed evaluation): ranks are
    # compared exactly, and the seen-item fill below is float32.
    with torch.autocast(queries.device.type, enabled=False):
        return _ranks_in_float32(queries, items, targets, seen, chunk_size, k_max)


def _ranks_in_float32(
    queries: Tensor,
    items: Tensor | ItemScorer,
    targets: Tensor,
    seen: Tensor | None,
    chunk_size: int,
    k_max: int,
) -> tuple[Tensor, Tensor]:
    if queries.dim() != 2 or len(items.shape) != 2 or queries.shape[1] != items.shape[1]:
        raise ValueError(f"need queries [B, D] and items [n_items, D], got {queries.shape}, {items.shape}")
    if targets.shape != (queries.shape[0],):
        raise ValueError(f"targets must be [B={queries.shape[0]}], got {tuple(targets.shape)}")
    if chunk_size < 1 or k_max < 0:
        raise ValueError(f"chunk_size must be >= 1 and k_max >= 0, got {chunk_size}, {k_max}")
    n_items, device = items.shape[0], queries.device
    batch = queries.shape[0]
    targets = targets.to(device=device, dtype=torch.long)
    if batch and (int(targets.min()) < 1 or int(targets.max()) >= n_items):
        raise ValueError(f"targets must lie in 1..{n_items - 1} (0 is padding)")
    if seen is not None:
        seen = seen.to(device=device, dtype=torch.long)
        if seen.dim() != 2 or seen.shape[0] != batch:
            raise ValueError(f"seen must be [B={batch}, S], got {tuple(seen.shape)}")
        # The target stays rankable even when listed as seen; 0 is padding and column 0 is removed anyway.
        seen_mask = (seen != targets[:, None]) & (seen > 0)

    queries = queries.float()
    t = _target_scores(queries, items, targets)[:, None]
    ranks = torch.zeros(batch, dtype=torch.long, device=device)
    top_vals = torch.full((batch, k_max), -math.inf, device=device)
    top_idx = torch.zeros((batch, k_max), dtype=torch.long, device=device)

    for start in range(0, n_items, chunk_size):
        stop = min(start + chunk_size, n_items)
        width = stop - start
        scores = _chunk_scores(queries, items, start, stop)  # [B, width]
        if start == 0:
            scores[:, 0] = -math.inf
        if seen is not None:
            in_chunk = seen_mask & (seen >= start) & (seen < stop)
            cols = torch.where(in_chunk, seen - start, 0)
            # amin with +inf leaves untouched the columns that out-of-chunk entries were parked on.
            fill = torch.where(in_chunk, -math.inf, math.inf)
            scores.scatter_reduce_(1, cols, fill, reduce="amin")
        if k_max:
            vals, idx = scores.topk(min(k_max, width), dim=1)
            if start == 0 and width >= k_max:
                top_vals, top_idx = vals, idx
            else:
                vals = torch.cat([top_vals, vals], dim=1)
                idx = torch.cat([top_idx, idx + start], dim=1)
                top_vals, pos = vals.topk(k_max, dim=1)
                top_idx = idx.gather(1, pos)
        # In place, 0/1 floats: much faster to sum than a bool tensor, and exact below 2^24 per row.
        ge = scores.ge_(t)
        count = ge.sum(dim=1, dtype=torch.float64 if width >= 2**24 else None)
        # The target's own column is removed by index, not by a ">= itself" test that rounding could flip.
        own = (targets >= start) & (targets < stop)
        own_col = (targets - start).clamp(0, width - 1)
        count -= ge.gather(1, own_col[:, None]).squeeze(1) * own
        ranks += count.long()

    top_idx = top_idx.masked_fill(top_vals == -math.inf, 0)
    return ranks, top_idx


ACCURACY = ("hr", "ndcg", "mrr")


class FullRankingMetrics:
    """Accumulates HR@K, NDCG@K, MRR@K and catalogue coverage@K over batches, by full ranking.

    HR@K = mean(rank < K), NDCG@K = mean(1/log2(rank+2) if rank < K), MRR@K = mean(1/(rank+1) if
    rank < K), with 0-based ranks from :func:`ranks_against_catalogue`, summed in float64. coverage@K is
    the fraction of real items (ids 1..n_items-1) that appear in at least one query's top-K. With
    ``exclude_seen=True`` the ``seen`` items passed to :meth:`update` (other than the target) are removed
    from each ranking; see the module docstring. State lives on the device of the last update.

    ``attributes`` (or :meth:`set_attributes`): the catalogue's item facts; with them the business
    metrics ``revenue@K``, ``in_stock@K``, ``diversity@K`` and ``novelty@K`` are accumulated too, each
    only where its attribute is known (absent, never 0, otherwise).
    """

    def __init__(
        self,
        n_items: int,
        ks: Sequence[int] = (10, 20, 100),
        chunk_size: int = 65536,
        exclude_seen: bool = False,
        attributes: ItemFacts | None = None,
    ) -> None:
        if n_items < 2:
            raise ValueError(f"n_items must be >= 2 (padding + one item), got {n_items}")
        self.ks = tuple(int(k) for k in ks)
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive, got {ks}")
        self.n_items = n_items
        self.chunk_size = chunk_size
        self.exclude_seen = exclude_seen
        self.attributes: ItemFacts | None = None
        self._facts: ItemFacts | None = None  # the attributes on the state's device
        self.set_attributes(attributes)
        self.reset()

    def set_attributes(self, attributes: ItemFacts | None) -> None:
        """Item facts for the business metrics from the next update on (None: accuracy only)."""
        if attributes is not None:
            attributes.check(self.n_items)
        self.attributes, self._facts = attributes, None

    def reset(self) -> None:
        """Forget every accumulated query."""
        self.last_top: Tensor | None = None  # the last update's top-max(ks) item ids [B, max(ks)]
        self._n = torch.zeros((), dtype=torch.long)
        # per K: hr, ndcg, mrr, then the business metrics' sums (LIST_METRICS order)
        self._sums = torch.zeros(len(self.ks), len(ACCURACY) + len(LIST_METRICS), dtype=torch.float64)
        self._covered = torch.zeros(len(self.ks), self.n_items, dtype=torch.bool)

    def _to(self, device: torch.device) -> None:
        if self._sums.device != device:
            self._n, self._sums, self._covered = (x.to(device) for x in (self._n, self._sums, self._covered))
        if self.attributes is not None and (self._facts is None or self._facts.device != device):
            self._facts = self.attributes.to(device)

    def update(
        self, queries: Tensor, items: Tensor | ItemScorer, targets: Tensor, seen: Tensor | None = None
    ) -> Tensor:
        """Rank one batch and accumulate it; returns the 0-based ranks [B] (its top-K ids: ``last_top``)."""
        if items.shape[0] != self.n_items:
            raise ValueError(f"items has {items.shape[0]} rows, expected n_items={self.n_items}")
        ranks, top = ranks_against_catalogue(
            queries,
            items,
            targets,
            seen=seen if self.exclude_seen else None,
            chunk_size=self.chunk_size,
            k_max=max(self.ks),
        )
        self._to(ranks.device)
        self.last_top = top  # kept for callers that want the recommendations themselves (no copy)
        r = ranks.double()
        ndcg, mrr = 1.0 / torch.log2(r + 2.0), 1.0 / (r + 1.0)
        targets = targets.to(ranks.device, torch.long)
        for j, k in enumerate(self.ks):
            hit = ranks < k
            self._sums[j, 0] += hit.sum()
            self._sums[j, 1] += torch.where(hit, ndcg, 0.0).sum()
            self._sums[j, 2] += torch.where(hit, mrr, 0.0).sum()
            self._covered[j, top[:, :k].reshape(-1)] = True  # unfilled slots hold 0, ignored below
            if self._facts is not None:
                self._sums[j, len(ACCURACY) :] += list_sums(self._facts, top[:, :k], targets, hit, k)
        self._n += ranks.numel()
        return ranks

    def compute(self) -> dict[str, float]:
        """Metrics over everything accumulated so far (NaN before any query), plus ``n``."""
        n = int(self._n)
        sums = self._sums.cpu()
        covered = self._covered[:, 1:].sum(dim=1).cpu()
        present = self.attributes.present() if self.attributes is not None else ()
        out: dict[str, float] = {}
        for j, k in enumerate(self.ks):
            for c, name in enumerate(ACCURACY):
                out[f"{name}@{k}"] = float(sums[j, c]) / n if n else math.nan
            out[f"coverage@{k}"] = int(covered[j]) / (self.n_items - 1)
            for c, name in enumerate(LIST_METRICS, start=len(ACCURACY)):
                if name in present:
                    out[f"{name}@{k}"] = float(sums[j, c]) / n if n else math.nan
        out["n"] = n
        return out

    def state(self) -> dict[str, Tensor]:
        """Additive state: ``n``, ``sums`` [len(ks), 7] (hr, ndcg, mrr, then the business metrics'
        sums: revenue, in_stock, diversity, novelty; 0 where absent), ``covered`` bool [len(ks), n_items].

        Distributed ranks combine by summing ``n`` and ``sums`` and OR-ing ``covered``.
        """
        return {"n": self._n.clone(), "sums": self._sums.clone(), "covered": self._covered.clone()}

    def merge(self, other: FullRankingMetrics | Mapping[str, Tensor]) -> None:
        """Add another accumulator (or its :meth:`state`) into this one."""
        if isinstance(other, FullRankingMetrics) and other.ks != self.ks:
            raise ValueError(f"cannot merge ks={other.ks} into ks={self.ks}")
        st = other.state() if isinstance(other, FullRankingMetrics) else other
        if st["covered"].shape != self._covered.shape or st["sums"].shape != self._sums.shape:
            raise ValueError(
                f"cannot merge state of shapes {tuple(st['covered'].shape)}, {tuple(st['sums'].shape)} "
                f"into {tuple(self._covered.shape)}, {tuple(self._sums.shape)}"
            )
        dev = self._sums.device
        self._n += st["n"].to(dev)
        self._sums += st["sums"].to(dev)
        self._covered |= st["covered"].to(dev)
