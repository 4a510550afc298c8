"""Tests for the synthetic e-commerce event generator."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from shopformer.data.synthetic import SyntheticConfig, generate

SMALL = SyntheticConfig(n_users=2000, n_items=800, n_categories=20, seed=7)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate(SMALL)


@pytest.fixture(scope="module")
def events(data: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    return data[0]


@pytest.fixture(scope="module")
def items(data: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    return data[1]


def _cart_sessions(events: pd.DataFrame) -> pd.DataFrame:
    """Per session with >= 1 cart: number of carts and whether it converted."""
    is_cart = events["event_type"].eq("cart")
    is_purchase = events["event_type"].eq("purchase")
    per = pd.DataFrame(
        {
            "session_id": events["session_id"],
            "carts": is_cart.astype(int),
            "purchases": is_purchase.astype(int),
        }
    )
    per = per.groupby("session_id").sum()
    per = per[per["carts"] > 0]
    per["converted"] = per["purchases"] > 0
    return per


def test_deterministic_by_seed(events: pd.DataFrame, items: pd.DataFrame) -> None:
    events2, items2 = generate(SMALL)
    pd.testing.assert_frame_equal(events, events2)
    pd.testing.assert_frame_equal(items, items2)
    other_events, other_items = generate(replace(SMALL, seed=8))
    assert not events.equals(other_events)
    assert not items.equals(other_items)


def test_schema(events: pd.DataFrame, items: pd.DataFrame) -> None:
    assert list(events.columns) == ["user_id", "session_id", "item_id", "timestamp", "event_type"]
    for col in ["user_id", "session_id", "item_id", "timestamp"]:
        assert events[col].dtype == np.int64, col
    assert pd.api.types.is_string_dtype(events["event_type"])
    assert set(events["event_type"].unique()) == {"view", "cart", "purchase"}

    assert list(items.columns) == ["item_id", "category", "price", "in_stock"]
    assert items["item_id"].dtype == np.int64
    assert pd.api.types.is_string_dtype(items["category"])
    assert items["category"].str.fullmatch(r"c\d{2,}").all()
    assert items["price"].dtype == np.float64
    assert items["in_stock"].dtype == bool
    assert len(items) == SMALL.n_items and items["item_id"].is_unique
    assert (items["price"] > 0).all()
    assert np.allclose(items["price"], items["price"].round(2))
    assert events["item_id"].isin(items["item_id"]).all()


def test_raw_ids_are_offset(events: pd.DataFrame, items: pd.DataFrame) -> None:
    assert items["item_id"].min() not in (0, 1)
    assert events["item_id"].min() not in (0, 1)
    assert events["user_id"].min() >= 1
    assert events["user_id"].nunique() == SMALL.n_users


def test_sorted_and_timestamps_increase_within_user(events: pd.DataFrame) -> None:
    assert events["user_id"].is_monotonic_increasing
    same_user = events["user_id"].eq(events["user_id"].shift())
    gaps = events["timestamp"].diff()[same_user]
    assert (gaps > 0).all()
    start = pd.Timestamp(SMALL.start, tz="UTC").timestamp()
    assert events["timestamp"].min() >= start
    # a session belongs to exactly one user
    assert events.groupby("session_id")["user_id"].nunique().eq(1).all()


def test_sessionization_by_30min_gap_recovers_session_ids(events: pd.DataFrame) -> None:
    new_user = events["user_id"].ne(events["user_id"].shift())
    new_by_gap = new_user | events["timestamp"].diff().gt(30 * 60)
    new_by_id = events["session_id"].ne(events["session_id"].shift())
    np.testing.assert_array_equal(new_by_gap.to_numpy(), new_by_id.to_numpy())
    assert events["session_id"].nunique() == int(new_by_gap.sum())


def test_realistic_gaps_and_volumes(events: pd.DataFrame) -> None:
    same_session = events["session_id"].eq(events["session_id"].shift())
    gaps = events["timestamp"].diff()[same_session]
    assert 20 <= gaps.median() <= 90
    assert gaps.quantile(0.99) < 15 * 60
    cart_gaps = events["timestamp"].diff()[same_session & events["event_type"].eq("cart")]
    assert cart_gaps.median() < gaps.median()

    views = events[events["event_type"].eq("view")]
    views_per_session = views.groupby("session_id").size()
    assert views_per_session.min() >= 1
    assert views_per_session.max() <= 50
    assert views_per_session.mean() == pytest.approx(SMALL.mean_session_views, rel=0.1)
    sessions_per_user = events.groupby("user_id")["session_id"].nunique()
    assert sessions_per_user.mean() == pytest.approx(SMALL.sessions_per_user, rel=0.1)


def test_default_config_size() -> None:
    events, items = generate()
    assert 150_000 <= len(events) <= 250_000
    assert len(items) == SyntheticConfig().n_items


def test_popularity_is_heavy_tailed(events: pd.DataFrame) -> None:
    counts = events.loc[events["event_type"].eq("view"), "item_id"].value_counts()
    top = counts.iloc[: SMALL.n_items // 10].sum()
    assert top / counts.sum() > 0.4


def test_users_concentrate_on_few_categories(events: pd.DataFrame, items: pd.DataFrame) -> None:
    views = events[events["event_type"].eq("view")].merge(items, on="item_id")
    active = views.groupby("user_id").size()
    views = views[views["user_id"].isin(active.index[active >= 20])]
    share = views.groupby(["user_id", "category"]).size()
    share = share / share.groupby(level=0).transform("sum")
    top3 = share.groupby(level=0).apply(lambda s: s.nlargest(3).sum())
    assert top3.median() > 0.7


def test_funnel_cart_follows_view_of_same_item(events: pd.DataFrame) -> None:
    prev = events.shift()
    carts = events["event_type"].eq("cart")
    assert carts.sum() > 0
    assert prev.loc[carts, "event_type"].eq("view").all()
    assert (prev.loc[carts, "item_id"] == events.loc[carts, "item_id"]).all()
    assert (prev.loc[carts, "session_id"] == events.loc[carts, "session_id"]).all()


def test_funnel_purchases_are_carted_items_at_session_end(events: pd.DataFrame) -> None:
    ev = events.assign(pos=events.groupby("session_id").cumcount())
    purchases = ev[ev["event_type"].eq("purchase")]
    assert len(purchases) > 0
    assert not purchases.duplicated(["session_id", "item_id"]).any()
    first_cart = ev[ev["event_type"].eq("cart")].groupby(["session_id", "item_id"])["pos"].min()
    carted_pos = first_cart.reindex(pd.MultiIndex.from_frame(purchases[["session_id", "item_id"]]))
    assert carted_pos.notna().all()
    assert (carted_pos.to_numpy() < purchases["pos"].to_numpy()).all()
    last_browse = ev[~ev["event_type"].eq("purchase")].groupby("session_id")["pos"].max()
    first_purchase = purchases.groupby("session_id")["pos"].min()
    assert (first_purchase > last_browse.reindex(first_purchase.index)).all()


def test_funnel_has_conversion_and_abandonment(events: pd.DataFrame) -> None:
    sessions = _cart_sessions(events)
    rate = sessions["converted"].mean()
    assert 0.0 < rate < 1.0
    assert rate == pytest.approx(SMALL.purchase_rate, abs=0.05)
    assert events["session_id"].nunique() > len(sessions)


def test_out_of_stock_items_are_viewed_but_never_carted(events: pd.DataFrame, items: pd.DataFrame) -> None:
    out = set(items.loc[~items["in_stock"], "item_id"])
    assert out
    assert not events.loc[events["event_type"].ne("view"), "item_id"].isin(out).any()
    assert events.loc[events["event_type"].eq("view"), "item_id"].isin(out).any()


def test_conversion_signals_are_visible(events: pd.DataFrame, items: pd.DataFrame) -> None:
    sessions = _cart_sessions(events)
    by_carts = sessions.groupby(sessions["carts"] >= 2)["converted"].mean()
    assert by_carts[True] > by_carts[False] + 0.05

    prices = events.merge(items, on="item_id")
    viewed = prices.loc[prices["event_type"].eq("view"), "price"].median()
    carted = prices.loc[prices["event_type"].eq("cart"), "price"].median()
    assert carted < viewed


def test_sequential_structure_beats_popularity(events: pd.DataFrame) -> None:
    views = events.loc[events["event_type"].eq("view"), ["user_id", "session_id", "item_id"]]
    pairs = views.assign(next_item=views["item_id"].shift(-1), next_session=views["session_id"].shift(-1))
    pairs = pairs[pairs["session_id"].eq(pairs["next_session"])]
    pairs = pairs.astype({"next_item": np.int64})
    train = pairs[pairs["user_id"] % 2 == 0]
    test = pairs[pairs["user_id"] % 2 == 1]
    assert len(test) > 5000

    counts = train.groupby(["item_id", "next_item"]).size().rename("n").reset_index()
    counts = counts.sort_values(["item_id", "n", "next_item"], ascending=[True, False, True])
    top_successors = counts.groupby("item_id").head(5)[["item_id", "next_item"]]
    hit = test.merge(top_successors.assign(hit=True), on=["item_id", "next_item"], how="left")
    successor_share = hit["hit"].fillna(False).astype(bool).mean()

    top_popular = train["next_item"].value_counts().index[:5]
    popularity_share = test["next_item"].isin(top_popular).mean()

    assert successor_share > 0.35
    assert successor_share > 2.0 * popularity_share


def test_follow_prob_drives_sequential_structure() -> None:
    cfg = SyntheticConfig(n_users=600, n_items=300, n_categories=10, seed=1)
    shares = []
    for follow in (0.0, 0.8):
        events, _ = generate(replace(cfg, follow_prob=follow))
        views = events[events["event_type"].eq("view")]
        same = views["session_id"].eq(views["session_id"].shift(-1))
        pairs = pd.DataFrame(
            {"a": views["item_id"][same], "b": views["item_id"].shift(-1)[same].astype(np.int64)}
        )
        top = pairs.groupby("a")["b"].agg(lambda s: set(s.value_counts().index[:5]))
        shares.append(np.mean([b in top[a] for a, b in zip(pairs["a"], pairs["b"], strict=True)]))
    assert shares[1] > shares[0] + 0.2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_users": 0},
        {"n_items": 5, "n_categories": 10},
        {"n_successors": 0},
        {"mean_session_views": 0.5},
        {"sessions_per_user": 0.5},
        {"cart_rate": 0.0},
        {"follow_prob": 1.5},
    ],
)
def test_invalid_config_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SyntheticConfig(**kwargs)


def test_edge_configs_still_valid() -> None:
    for kwargs in (
        {"sessions_per_user": 1.0, "mean_session_views": 1.0},
        {"n_items": 6, "n_categories": 6, "n_successors": 5},
        {"follow_prob": 1.0, "in_stock_rate": 0.0},
    ):
        events, items = generate(SyntheticConfig(n_users=50, **kwargs))
        assert len(events) >= 50
        assert events["item_id"].isin(items["item_id"]).all()
        same_user = events["user_id"].eq(events["user_id"].shift())
        assert (events["timestamp"].diff()[same_user] > 0).all()


def test_journey_signal_plants_checkout_reviews_and_keeps_the_funnel() -> None:
    cfg = replace(SMALL, journey_signal=1.0)
    events, items = generate(cfg)
    base, _ = generate(SMALL)
    assert events["session_id"].nunique() == base["session_id"].nunique()  # same sessions, more events
    ev = events.assign(pos=events.groupby("session_id").cumcount())
    is_cart = ev["event_type"].eq("cart")
    carted = set(zip(ev.loc[is_cart, "session_id"], ev.loc[is_cart, "item_id"], strict=True))
    browse = ev[~ev["event_type"].eq("purchase")]
    last = browse.groupby("session_id").tail(1)
    reviewed = pd.Series(
        [
            (s, i) in carted and kind == "view"
            for s, i, kind in zip(last["session_id"], last["item_id"], last["event_type"], strict=True)
        ],
        index=last["session_id"].to_numpy(),
    )
    sessions = _cart_sessions(events)
    review_rate = reviewed.reindex(sessions.index).groupby(sessions["converted"]).mean()
    assert review_rate[True] > review_rate[False] + 0.3  # a carted item viewed again, then checkout
    # bargain hunting: converting sessions view cheaper items (relative to their category) on average
    log_price = np.log(items.set_index("item_id")["price"])
    category = items.set_index("item_id")["category"]
    relative = log_price - log_price.groupby(category).transform("mean")
    views = events[events["event_type"].eq("view")]
    cheapness = relative.reindex(views["item_id"]).groupby(views["session_id"].to_numpy()).mean()
    by_outcome = cheapness.reindex(sessions.index).groupby(sessions["converted"]).mean()
    assert by_outcome[True] < by_outcome[False] - 0.05
    # the funnel rules still hold
    prev = events.shift()
    carts = events["event_type"].eq("cart")
    assert (prev.loc[carts, "item_id"] == events.loc[carts, "item_id"]).all()
    first_purchase = ev[ev["event_type"].eq("purchase")].groupby("session_id")["pos"].min()
    assert (first_purchase > browse.groupby("session_id")["pos"].max().reindex(first_purchase.index)).all()


def test_journey_signal_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="journey_signal"):
        SyntheticConfig(journey_signal=-1.0)
