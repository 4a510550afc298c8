"""Business rules on candidate arrays, checked against hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopformer.data.vocab import encode_items
from shopformer.serve.rules import FilterError, Filters, ItemAttributes, Rules, normalise_raw_ids


@pytest.fixture(scope="module")
def attributes() -> ItemAttributes:
    # internal ids 1..6
    vocab = pd.DataFrame(
        {
            "item": np.arange(1, 7, dtype=np.int32),
            "item_id": [10, 20, 30, 40, 50, 60],
            "category": ["a", "b", "a", "c", None, "b"],
            "price": [5.0, 15.0, np.nan, 25.0, 35.0, 45.0],
            "in_stock": [True, False, True, True, True, False],
            "new_arrival": [False, True, False, True, False, False],
        }
    )
    return ItemAttributes(vocab)


IDS = np.array([1, 2, 3, 4, 5, 6], dtype=np.int64)
SCORES = np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0], dtype=np.float32)


def kept(filters, attributes, seen=None) -> list[int]:
    keep, _ = Rules(filters, attributes).apply(IDS, SCORES, seen)
    return IDS[keep].tolist()


def test_no_filters_keep_everything_but_seen_and_padding(attributes):
    keep, scores = Rules({}, attributes).apply(np.array([0, 1, 2, 3]), np.ones(4, np.float32), np.array([2]))
    assert keep.tolist() == [False, True, False, True]
    assert Filters.parse({}).empty


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"in_stock": True}, [1, 3, 4, 5]),
        ({"in_stock": False}, [1, 2, 3, 4, 5, 6]),
        ({"categories": ["a", "c"]}, [1, 3, 4]),
        ({"categories": ["zzz"]}, []),
        ({"exclude_categories": ["b"]}, [1, 3, 4, 5]),  # no category is not "b"
        ({"min_price": 15}, [2, 4, 5, 6]),  # no price never passes a price filter
        ({"max_price": 25}, [1, 2, 4]),
        ({"min_price": 10, "max_price": 40}, [2, 4, 5]),
        ({"exclude_items": [20, 60, 999]}, [1, 3, 4, 5]),  # unknown raw ids are ignored
        ({"exclude_items": ["20"]}, [1, 3, 4, 5, 6]),  # string ids for an integer catalogue
        ({"in_stock": True, "categories": ["a", "b"], "max_price": 10}, [1]),
    ],
)
def test_each_filter(attributes, filters, expected):
    assert kept(filters, attributes) == expected


def test_filters_combine_with_seen(attributes):
    assert kept({"in_stock": True}, attributes, seen=np.array([1, 4])) == [3, 5]


def test_boosts_add_to_scores(attributes):
    rules = Rules(
        {"boosts": {"new_arrival": 2.5}, "boost_items": {"50": 1.0, "60": -1.0, "777": 9}}, attributes
    )
    _, boosted = rules.apply(IDS, SCORES)
    # items 2 and 4 are new arrivals (+2.5); raw 50 is item 5 (+1), raw 60 is item 6 (-1)
    assert boosted.tolist() == pytest.approx([6.0, 7.5, 4.0, 5.5, 3.0, 0.0])
    assert IDS[np.argsort(-boosted, kind="stable")].tolist() == [2, 1, 4, 3, 5, 6]
    assert rules.max_boost == pytest.approx(3.5)  # the most one item can gain
    assert not rules.restricts


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"colour": ["red"]}, "colour"),
        ({"boosts": {"price": 1.0}}, "boosts.price"),  # not a boolean attribute
        ({"boosts": {"new_arrival": "much"}}, "boosts.new_arrival"),
        ({"min_price": 50, "max_price": 10}, "min_price"),
        ({"categories": "a"}, "categories"),
        ({"max_price": float("inf")}, "max_price"),
    ],
)
def test_bad_filters_name_the_field(attributes, filters, field):
    with pytest.raises(FilterError) as info:
        Rules(filters, attributes)
    assert ".".join(map(str, info.value.loc)) == f"filters.{field}"


def test_filter_on_an_attribute_the_bundle_lacks(attributes):
    bare = ItemAttributes(pd.DataFrame({"item": [1, 2], "item_id": ["x", "y"]}))
    for filters, field in [
        ({"in_stock": True}, "in_stock"),
        ({"min_price": 1}, "min_price"),
        ({"exclude_categories": ["a"]}, "exclude_categories"),
    ]:
        with pytest.raises(FilterError, match="has no") as info:
            Rules(filters, bare)
        assert info.value.loc == ("filters", field)


def test_in_sorted_equals_isin():
    from shopformer.serve.rules import in_sorted

    rng = np.random.default_rng(0)
    for size in (0, 1, 5, 300):
        seen = np.unique(rng.integers(0, 500, size=size))
        values = rng.integers(-3, 520, size=(4, 50))
        np.testing.assert_array_equal(in_sorted(values, seen), np.isin(values, seen))


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=40, unique=True),
    asked=st.lists(
        st.one_of(
            st.integers(-(2**40), 2**40),
            st.integers(2**63, 2**70),  # beyond int64
            st.booleans(),
            st.text(max_size=4),
            st.integers(-50, 50).map(str),  # ints sent as text
        ),
        max_size=30,
    ),
    pick=st.randoms(use_true_random=False),
)
def test_the_numpy_search_of_an_int_catalogue_answers_as_the_general_lookup(keys, asked, pick):
    keys = sorted(keys)
    asked = asked + pick.sample(keys, min(3, len(keys)))  # some ids the catalogue has
    vocab = pd.DataFrame({"item": np.arange(1, len(keys) + 1), "item_id": np.array(keys, dtype=np.int64)})
    attrs = ItemAttributes(vocab)
    assert attrs._int_keys is not None
    general = encode_items(normalise_raw_ids(asked, attrs.raw_index), attrs.raw_index).astype(np.int64)
    got = attrs.encode(asked)
    np.testing.assert_array_equal(got, general if asked else np.empty(0, dtype=np.int64))
    ints = [v for v in asked if type(v) is int and -(2**63) <= v < 2**63]
    expected = [keys.index(v) + 1 if v in keys else 0 for v in ints]
    assert attrs.encode(ints).tolist() == expected
