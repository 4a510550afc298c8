"""Full-ranking metrics in plain NumPy: the reference the batched evaluator is checked against."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target among all items (column 0, padding, never counts).

    Ties are broken against the target: every other item with an equal score
    ranks above it, so constant scores earn nothing.
    """
    scores = np.asarray(scores, dtype=np.float64).copy()
    scores[:, 0] = -np.inf
    target_scores = scores[np.arange(len(targets)), targets][:, None]
    return (scores >= target_scores).sum(axis=1) - 1


def ranking_metrics(ranks: np.ndarray, ks: Iterable[int] = (10, 20, 100)) -> dict[str, float]:
    """HR@K (= recall with one target), NDCG@K and MRR@K, averaged over examples."""
    ranks = np.asarray(ranks)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
        out[f"mrr@{k}"] = float(np.where(hit, 1.0 / (ranks + 1.0), 0.0).mean())
    return out


def popularity_ranks(counts: np.ndarray) -> np.ndarray:
    """Each real item's count of strictly more popular real items / (real items - 1); padding 0."""
    real = np.asarray(counts, dtype=np.float64)[1:]
    greater = (real[None, :] > real[:, None]).sum(axis=1)
    return np.r_[0.0, greater / max(len(real) - 1, 1)]


def list_metrics(
    top: np.ndarray,
    targets: np.ndarray,
    ranks: np.ndarray,
    ks: Iterable[int] = (10, 20, 100),
    *,
    price: np.ndarray | None = None,
    in_stock: np.ndarray | None = None,
    category: np.ndarray | None = None,
    popularity_rank: np.ndarray | None = None,
) -> dict[str, float]:
    """revenue@K, in_stock@K, diversity@K, novelty@K (see :mod:`shopformer.models.business_metrics`),
    query by query, from each query's ranked ids ``top`` [B, >= max K] (0 = empty slot) and its target's
    0-based rank (a hit at K: rank < K); a metric whose attribute is ``None`` is absent."""
    out: dict[str, float] = {}
    for k in ks:
        revenue, stock, diverse, novel = [], [], [], []
        for row, target, rank in zip(np.asarray(top)[:, :k], targets, ranks, strict=True):
            items = [int(i) for i in row if i > 0]
            slots = max(len(items), 1)
            if price is not None:
                p = price[target]
                revenue.append(p if rank < k and not np.isnan(p) else 0.0)
            if in_stock is not None:
                stock.append(sum(bool(in_stock[i]) for i in items) / slots)
            if category is not None:
                diverse.append(len({int(category[i]) for i in items if category[i] >= 0}) / k)
            if popularity_rank is not None:
                novel.append(sum(popularity_rank[i] for i in items) / slots)
        for name, values, attribute in (
            ("revenue", revenue, price),
            ("in_stock", stock, in_stock),
            ("diversity", diverse, category),
            ("novelty", novel, popularity_rank),
        ):
            if attribute is not None:
                out[f"{name}@{k}"] = float(np.mean(values))
    return out
