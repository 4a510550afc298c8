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
