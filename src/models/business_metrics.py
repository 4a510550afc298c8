"""Business metrics of ranked lists, beside accuracy: revenue, in-stock share, diversity, novelty.

For each cut-off K, over the evaluated queries (one target each) and their top-K lists:

- ``revenue@K``: mean of ``price(target)`` if the target is in the top K, else 0 (price-weighted hits:
  what a click-to-buy on the recommendation would earn). A target of unknown price earns 0.
- ``in_stock@K``: mean over queries of the share of the top-K items that are in stock (an item of
  unknown availability counts as not in stock).
- ``diversity@K``: mean over queries of (distinct categories in the top K) / K, in [0, 1]; items of
  unknown category add no category. Distinct categories rather than category entropy: simple to
  read ("6 of 10 slots bring a new category"), bounded, and it needs no choice of logarithm or
  smoothing.
- ``novelty@K``: mean over queries of the mean normalised popularity rank of the top-K items, in
  [0, 1], 0 = the most popular item (:func:`popularity_ranks`, from training interaction counts).

The share-of-list metrics (in-stock, novelty) divide by the slots actually filled (a top-K of a
catalogue with fewer than K rankable items has empty slots, id 0); diversity divides by K. A metric
whose attribute the catalogue lacks is absent, never reported as 0 (:meth:`ItemFacts.present`).
:class:`~shopformer.models.ranking_metrics.FullRankingMetrics` accumulates them; their NumPy
reference is :func:`shopformer.models.ranking_reference.list_metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

LIST_METRICS = ("revenue", "in_stock", "diversity", "novelty")  # the order of their state columns


def popularity_ranks(counts: np.ndarray) -> np.ndarray:
    """float64 [n_items]: each real item's popularity rank normalised to [0, 1], 0 = most popular.

    ``counts``: training interactions per item id (index 0 = padding, as
    :meth:`~shopformer.data.base_datamodule.BaseDataModule.train_item_counts` gives them). The rank of
    item i is the number of real items with strictly more interactions, divided by (real items - 1):
    tied items share their best rank. Row 0 (padding) is 0.
    """
    real = np.asarray(counts, dtype=np.float64)[1:]
    greater = real.size - np.searchsorted(np.sort(real), real, side="right")
    return np.r_[0.0, greater / max(real.size - 1, 1)]


@dataclass(frozen=True)
class ItemFacts:
    """Per-item attributes indexed by internal id (row 0 = padding); ``None``: the catalogue lacks it.

    ``price`` float64 (NaN = unknown), ``in_stock`` bool, ``category`` int64 codes (-1 = unknown),
    ``popularity_rank`` float64 in [0, 1] (0 = most popular).
    """

    price: Tensor | None = None
    in_stock: Tensor | None = None
    category: Tensor | None = None
    popularity_rank: Tensor | None = None

    @classmethod
    def from_arrays(
        cls, attributes: Mapping[str, np.ndarray], train_counts: np.ndarray | None = None
    ) -> ItemFacts:
        """From NumPy arrays (``price``, ``in_stock``, ``category``, any of them absent) and the
        training counts per item (the popularity ranks)."""
        dtypes = {"price": torch.float64, "in_stock": torch.bool, "category": torch.int64}
        values = {
            k: torch.as_tensor(np.asarray(attributes[k]), dtype=t)
            for k, t in dtypes.items()
            if k in attributes
        }
        if "in_stock" in values:  # padding is never in stock and has no category
            values["in_stock"] = values["in_stock"].clone()
            values["in_stock"][0] = False
        if "category" in values:
            values["category"] = values["category"].clone()
            values["category"][0] = -1
        if train_counts is not None:
            values["popularity_rank"] = torch.as_tensor(popularity_ranks(train_counts))
        return cls(**values)

    def present(self) -> tuple[str, ...]:
        """The list metrics these facts allow, in :data:`LIST_METRICS` order."""
        needs = {
            "revenue": self.price,
            "in_stock": self.in_stock,
            "diversity": self.category,
            "novelty": self.popularity_rank,
        }
        return tuple(name for name in LIST_METRICS if needs[name] is not None)

    def check(self, n_items: int) -> None:
        """Refuse an attribute that is not one value per item id."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and tuple(value.shape) != (n_items,):
                raise ValueError(f"{f.name} must be [n_items={n_items}], got {tuple(value.shape)}")

    @property
    def device(self) -> torch.device | None:
        """Where the attributes live (None without any)."""
        present = [getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None]
        return present[0].device if present else None

    def to(self, device: torch.device) -> ItemFacts:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: v.to(device) for k, v in moved.items() if v is not None})


def distinct_categories(codes: Tensor) -> Tensor:
    """Per row of ``codes`` [B, K] (int, -1 = unknown), the number of distinct known codes [B]."""
    s = codes.sort(dim=1).values
    new = torch.ones_like(s, dtype=torch.bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    return (new & (s >= 0)).sum(dim=1)


def list_sums(facts: ItemFacts, top: Tensor, targets: Tensor, hit: Tensor, k: int) -> Tensor:
    """float64 [4]: this batch's sums over queries of revenue, in-stock share, diversity and novelty at
    ``k`` (0 where the attribute is absent), from the top-``k`` ids ``top`` [B, k] (0 = empty slot)."""
    out = torch.zeros(len(LIST_METRICS), dtype=torch.float64, device=top.device)
    filled = top > 0
    slots = filled.sum(dim=1).clamp(min=1).double()
    if facts.price is not None:
        out[0] = torch.where(hit, facts.price[targets].nan_to_num(0.0), 0.0).sum()
    if facts.in_stock is not None:
        out[1] = ((facts.in_stock[top] & filled).sum(dim=1) / slots).sum()
    if facts.category is not None:
        out[2] = (distinct_categories(facts.category[top]).double() / k).sum()
    if facts.popularity_rank is not None:
        out[3] = ((facts.popularity_rank[top] * filled).sum(dim=1) / slots).sum()
    return out
