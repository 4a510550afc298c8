"""The plots of every next-item run, as PNG files: learning curves and popularity bias.

NumPy and matplotlib's object API only (a ``Figure`` on an Agg canvas, no pyplot state), so plotting
touches nothing global. The next-item task writes them into ``<run dir>/plots`` and logs them to
MLflow as ``plots/learning_curves.png`` and ``plots/popularity_bias.png``.

Popularity deciles: the real items (ids 1..n-1) sorted by their number of training interactions,
most popular first, cut into ten equal parts; decile 1 is the most popular tenth of the catalogue.
Items with equal counts are ordered by id, so every decile holds a tenth of the catalogue (one item
more or less) even when many items share a count (e.g. never bought).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DECILES = 10
LEARNING_CURVES_PNG = "learning_curves.png"
POPULARITY_BIAS_PNG = "popularity_bias.png"
# The learning curve's series: key in the module's per-epoch record -> panel title.
CURVES = {"train/loss": "training loss (mean over the epoch)", "val/ndcg_10": "validation NDCG@10"}


def popularity_deciles(counts: np.ndarray) -> np.ndarray:
    """0-based popularity decile of every item id (0: the most popular tenth); -1 for padding id 0.

    ``counts``: training interactions per item id, index 0 the padding id."""
    counts = np.asarray(counts)
    n = len(counts) - 1
    if n < 1:
        raise ValueError("popularity deciles need at least one item besides the padding id 0")
    deciles = np.full(len(counts), -1, dtype=np.int64)
    most_popular_first = np.argsort(-counts[1:].astype(np.float64), kind="stable") + 1
    deciles[most_popular_first] = np.arange(n) * DECILES // n
    return deciles


def decile_shares(item_ids: np.ndarray, deciles: np.ndarray) -> np.ndarray:
    """Share of ``item_ids`` (any shape; 0 = an empty slot, left out) in each decile [10]."""
    ids = np.asarray(item_ids).ravel()
    ids = ids[ids > 0]
    if not ids.size:
        return np.zeros(DECILES)
    return np.bincount(deciles[ids], minlength=DECILES) / ids.size


@dataclass(frozen=True)
class PopularityBias:
    """Shares [10] per popularity decile (index 0: the most popular tenth of the items)."""

    catalogue: np.ndarray  # of the items themselves: a tenth each
    targets: np.ndarray  # of the test targets
    recommended: np.ndarray  # of the items in the test top-k lists
    queries: int
    k: int


def popularity_bias(counts: np.ndarray, top_ids: np.ndarray, targets: np.ndarray) -> PopularityBias:
    """Decile shares of the catalogue, the test targets and the top-k recommendations [queries, k]."""
    deciles = popularity_deciles(counts)
    top_ids = np.asarray(top_ids)
    return PopularityBias(
        catalogue=decile_shares(np.arange(1, len(deciles)), deciles),
        targets=decile_shares(targets, deciles),
        recommended=decile_shares(top_ids, deciles),
        queries=len(top_ids),
        k=top_ids.shape[1] if top_ids.ndim == 2 else 0,
    )


def popularity_bias_plot(bias: PopularityBias, path: str | Path) -> Path:
    """Grouped bars per decile: catalogue, test targets and top-k recommendations (in %)."""
    fig, ax = _figure(8, 4.5)
    x = np.arange(1, DECILES + 1)
    width = 0.27
    ax.bar(x - width, bias.catalogue * 100, width, color="lightgrey", label="catalogue (items)")
    ax.bar(x, bias.targets * 100, width, color="tab:blue", label=f"test targets ({bias.queries:,})")
    recommended = f"top-{bias.k} recommendations"
    ax.bar(x + width, bias.recommended * 100, width, color="tab:orange", label=recommended)
    ax.set(xticks=x, xlabel="item popularity decile in training (1 = the most popular 10 % of items)")
    ax.set(ylabel="share (%)")
    ax.set_title(
        f"Popularity bias: {bias.recommended[0]:.0%} of the top-{bias.k} items in decile 1 "
        f"({bias.targets[0]:.0%} of the targets)",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def learning_curves_plot(curve: Mapping[int, Mapping[str, float]], path: str | Path) -> Path:
    """Training loss and validation NDCG@10 per epoch (``curve``: epoch -> series -> value)."""
    fig, axes = _figure(10, 4, panels=len(CURVES))
    for ax, (key, title) in zip(axes, CURVES.items(), strict=True):
        epochs = [e for e in sorted(curve) if key in curve[e]]
        ax.plot(epochs, [curve[e][key] for e in epochs], marker="o")
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ndcg = {e: v["val/ndcg_10"] for e, v in curve.items() if np.isfinite(v.get("val/ndcg_10", np.nan))}
    if ndcg:
        best = max(ndcg, key=ndcg.get)
        axes[-1].axvline(best, color="grey", linestyle=":", label=f"best {ndcg[best]:.4f} (epoch {best})")
        axes[-1].legend(fontsize=8)
    return _save(fig, path)


def next_item_plots(
    directory: str | Path,
    curve: Mapping[int, Mapping[str, float]],
    counts: np.ndarray,
    top_ids: np.ndarray,
    targets: np.ndarray,
) -> list[Path]:
    """The learning curves (when an epoch was trained) and the popularity-bias plot (when the test
    ran) written into ``directory``; their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    if curve:
        paths.append(learning_curves_plot(curve, directory / LEARNING_CURVES_PNG))
    if len(top_ids):
        bias = popularity_bias(counts, top_ids, targets)
        paths.append(popularity_bias_plot(bias, directory / POPULARITY_BIAS_PNG))
    return paths


def _figure(width: float, height: float, panels: int = 1) -> tuple[Figure, Any]:
    """A figure on its own Agg canvas (no pyplot) and its axes (one, or an array of ``panels``)."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=True)
    return fig, axes


def _save(fig: Figure, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
