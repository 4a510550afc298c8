"""Business metrics of the full-ranking accumulator (revenue, in-stock, diversity, novelty @K): equal to
the NumPy reference on random inputs, by hand on a tiny case, absent without their attribute, mergeable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shopformer.data.item_attributes import item_attribute_arrays
from shopformer.models.business_metrics import ItemFacts, popularity_ranks
from shopformer.models.ranking_metrics import FullRankingMetrics
from shopformer.models.ranking_reference import list_metrics
from shopformer.models.ranking_reference import popularity_ranks as reference_popularity_ranks

BUSINESS = ("revenue", "in_stock", "diversity", "novelty")


def random_catalogue(rng: np.random.Generator, n_items: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    price = rng.uniform(1, 100, n_items)
    price[::7] = np.nan  # unknown prices
    category = rng.integers(-1, 6, n_items)  # -1: unknown category
    attributes = {"price": price, "in_stock": rng.random(n_items) < 0.7, "category": category}
    counts = rng.integers(0, 5, n_items)  # many ties, some never seen in training
    counts[0] = 0
    return attributes, counts


def run_batches(metrics: FullRankingMetrics, batches, items) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feed ``batches`` to ``metrics``; every query's top ids, target and rank."""
    tops, targets, ranks = [], [], []
    for q, t in batches:
        ranks.append(metrics.update(q, items, t).numpy())
        tops.append(metrics.last_top.numpy())
        targets.append(t.numpy())
    return np.concatenate(tops), np.concatenate(targets), np.concatenate(ranks)


@pytest.mark.parametrize("n_items", [300, 15])  # 15: K = 20 exceeds the catalogue (empty slots)
def test_business_metrics_equal_the_numpy_reference(n_items):
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    attributes, counts = random_catalogue(rng, n_items)
    facts = ItemFacts.from_arrays(attributes, counts)
    ks = (1, 5, 20)
    items = torch.randn(n_items, 8, generator=gen)
    batches = [
        (torch.randn(b, 8, generator=gen), torch.randint(1, n_items, (b,), generator=gen)) for b in (17, 9)
    ]
    metrics = FullRankingMetrics(n_items, ks=ks, chunk_size=64, attributes=facts)
    top, targets, ranks = run_batches(metrics, batches, items)
    got = metrics.compute()
    padded = {k: v.copy() for k, v in attributes.items()}
    padded["in_stock"][0], padded["category"][0] = False, -1  # padding: never in stock, no category
    want = list_metrics(top, targets, ranks, ks, **padded, popularity_rank=reference_popularity_ranks(counts))
    assert set(want) == {f"{name}@{k}" for name in BUSINESS for k in ks}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert got["revenue@20"] > 0 and 0 < got["in_stock@20"] < 1 and 0 < got["diversity@20"] <= 1
    assert 0 < got["novelty@20"] < 1


def test_popularity_ranks_equal_the_reference_and_rank_the_most_popular_first():
    counts = np.array([0, 5, 9, 5, 0, 1])
    ranks = popularity_ranks(counts)
    np.testing.assert_array_equal(ranks, reference_popularity_ranks(counts))
    np.testing.assert_allclose(ranks, [0, 1 / 4, 0, 1 / 4, 4 / 4, 3 / 4])
    counts = np.random.default_rng(1).integers(0, 50, 400)
    np.testing.assert_array_equal(popularity_ranks(counts), reference_popularity_ranks(counts))


def test_by_hand():
    # Items 1..4: item 1 scores highest, then 2, 3, 4. Prices 10, 20, unknown, 40; in stock 1 and 3.
    items = torch.tensor([[0.0], [4.0], [3.0], [2.0], [1.0]])
    facts = ItemFacts.from_arrays(
        {
            "price": np.array([np.nan, 10.0, 20.0, np.nan, 40.0]),
            "in_stock": np.array([True, True, False, True, False]),  # padding's True is ignored
            "category": np.array([5, 0, 0, 1, -1]),
        },
        np.array([0, 1, 3, 2, 0]),  # popularity order 2, 3, 1, 4: ranks 2/3, 0, 1/3, 1
    )
    metrics = FullRankingMetrics(5, ks=(2,), attributes=facts)
    metrics.update(torch.ones(2, 1), items, torch.tensor([2, 4]))  # both get the top 2 = items 1, 2
    got = metrics.compute()
    assert got["revenue@2"] == pytest.approx((20.0 + 0.0) / 2)  # item 2 hit, item 4 missed
    assert got["in_stock@2"] == pytest.approx(0.5)
    assert got["diversity@2"] == pytest.approx(0.5)  # one category (0) in two slots
    assert got["novelty@2"] == pytest.approx((2 / 3 + 0) / 2)


def test_metrics_that_need_a_missing_attribute_are_absent():
    gen = torch.Generator().manual_seed(2)
    items, q, t = torch.randn(40, 4, generator=gen), torch.randn(6, 4, generator=gen), torch.arange(1, 7)
    plain = FullRankingMetrics(40, ks=(10,))
    plain.update(q, items, t)
    assert not {f"{name}@10" for name in BUSINESS} & set(plain.compute())
    popularity_only = FullRankingMetrics(40, ks=(10,), attributes=ItemFacts.from_arrays({}, np.arange(40)))
    popularity_only.update(q, items, t)
    keys = set(popularity_only.compute())
    assert "novelty@10" in keys and not {"revenue@10", "in_stock@10", "diversity@10"} & keys
    with pytest.raises(ValueError, match="price must be"):
        FullRankingMetrics(41, ks=(10,), attributes=ItemFacts.from_arrays({"price": np.ones(40)}))


def test_an_item_table_without_values_gives_no_attribute():
    import pandas as pd

    vocab = pd.DataFrame(
        {
            "item": [2, 1, 3],
            "item_id": ["b", "a", "c"],
            "price": [np.nan, np.nan, np.nan],
            "in_stock": [True, None, False],
            "category": ["x", None, "x"],
        }
    )
    arrays = item_attribute_arrays(vocab)
    assert set(arrays) == {"in_stock", "category"}  # no item has a price
    np.testing.assert_array_equal(arrays["in_stock"], [False, False, True, False])
    np.testing.assert_array_equal(arrays["category"], [-1, -1, 0, 0])
    assert item_attribute_arrays(vocab[["item", "item_id"]]) == {}


def test_merge_keeps_the_business_sums():
    rng, gen = np.random.default_rng(3), torch.Generator().manual_seed(3)
    attributes, counts = random_catalogue(rng, 60)
    facts = ItemFacts.from_arrays(attributes, counts)
    items = torch.randn(60, 4, generator=gen)
    batches = [
        (torch.randn(8, 4, generator=gen), torch.randint(1, 60, (8,), generator=gen)) for _ in range(4)
    ]
    whole, left, right = (FullRankingMetrics(60, ks=(5, 10), attributes=facts) for _ in range(3))
    for i, (q, t) in enumerate(batches):
        whole.update(q, items, t)
        (left if i < 2 else right).update(q, items, t)
    left.merge(right.state())
    want, got = whole.compute(), left.compute()
    assert "revenue@10" in want
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
