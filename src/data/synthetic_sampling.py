"""Sampling helpers of the synthetic shop (:mod:`shopformer.data.synthetic`): items by category,
the item successor graph, calibrated logistic intercepts, the start time."""

from __future__ import annotations

import numpy as np
import pandas as pd

SAME_CATEGORY_SUCCESSOR_PROB = 0.8


class CategorySampler:
    """Draws items proportionally to `weights`, restricted to a given category per draw."""

    def __init__(self, weights: np.ndarray, category: np.ndarray, n_categories: int) -> None:
        self.order = np.argsort(category, kind="stable")
        self.cum = np.cumsum(weights[self.order])
        counts = np.bincount(category, minlength=n_categories)
        self.end = np.cumsum(counts)
        self.start = self.end - counts
        self.before = np.concatenate(([0.0], self.cum))[self.start]
        self.total = self.cum[self.end - 1] - self.before

    def sample(self, categories: np.ndarray, u: np.ndarray) -> np.ndarray:
        v = self.before[categories] + u * self.total[categories]
        idx = np.searchsorted(self.cum, v, side="right")
        # float rounding can land one past the category's last item
        idx = np.clip(idx, self.start[categories], self.end[categories] - 1)
        return self.order[idx]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def log_odds(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def calibrated_bias(signal: np.ndarray, rate: float) -> float:
    """Intercept b with mean(sigmoid(b + signal)) == rate (bisection; monotone in b)."""
    if signal.size == 0:
        return log_odds(rate)
    lo, hi = -30.0, 30.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if sigmoid(mid + signal).mean() < rate:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def start_timestamp(start: str) -> int:
    ts = pd.Timestamp(start)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.timestamp())


def successor_graph(
    rng: np.random.Generator,
    category: np.ndarray,
    in_category: CategorySampler,
    overall: CategorySampler,
    n_successors: int,
) -> np.ndarray:
    """(n_items, n_successors) successor table: distinct, never the item itself."""
    n_items = category.size
    succ = np.full((n_items, n_successors), -1, dtype=np.int64)
    for j in range(n_successors):
        todo = np.arange(n_items)
        attempt = 0
        while todo.size:
            m = todo.size
            if attempt < 10:
                same = rng.random(m) < SAME_CATEGORY_SUCCESSOR_PROB
                cand = np.where(
                    same,
                    in_category.sample(category[todo], rng.random(m)),
                    overall.sample(np.zeros(m, dtype=np.int64), rng.random(m)),
                )
            elif attempt < 50:
                cand = overall.sample(np.zeros(m, dtype=np.int64), rng.random(m))
            else:
                cand = rng.integers(0, n_items, m)
            bad = (cand == todo) | (succ[todo, :j] == cand[:, None]).any(axis=1)
            succ[todo[~bad], j] = cand[~bad]
            todo = todo[bad]
            attempt += 1
    return succ
