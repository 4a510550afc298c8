"""Preprocessing: dedupe, filters, k-core, sessionization, encoding, truncation, reporting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopformer.data.preprocess import PreprocessConfig, preprocess
from shopformer.data.schema import EventTable
from shopformer.data.vocab import PAD_TOKEN, encode_items
from shopformer.errors import DataError


def table(rows, has_timestamps=True, **kw) -> EventTable:
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event_type"])
    return EventTable(events=df, origin="mem", has_timestamps=has_timestamps, **kw)


def decoded(out) -> list[list]:
    """Raw item ids per sequence, in order."""
    raw = out.item_vocab.set_index("item")["item_id"]
    return [list(raw[g["item"]]) for _, g in out.events.groupby("seq")]


def test_sorting_and_encoding_with_padding_zero():
    t = table([("u2", 30, 5, "view"), ("u1", 20, 2, "view"), ("u1", 10, 1, "cart"), ("u2", 10, 4, "view")])
    out = preprocess(t, PreprocessConfig())
    assert decoded(out) == [[10, 20], [10, 30]]
    assert out.item_vocab["item"].tolist() == [1, 2, 3]
    assert out.item_vocab["item_id"].tolist() == [10, 20, 30]
    assert out.events["item"].min() == 1
    assert out.event_vocab == [PAD_TOKEN, "view", "cart"]
    assert out.sequence_keys["key"].tolist() == ["u1", "u2"]
    np.testing.assert_array_equal(encode_items(pd.Series([30, 99]), out.item_vocab), [3, 0])


def test_ties_in_time_keep_input_order():
    t = table([("u", 3, 7, "view"), ("u", 1, 7, "view"), ("u", 2, 7, "view")])
    assert decoded(preprocess(t, PreprocessConfig()))[0] == [3, 1, 2]


def test_consecutive_duplicates_dropped_and_counted():
    rows = [
        ("u", 1, 1, "view"),
        ("u", 1, 2, "view"),
        ("u", 1, 3, "cart"),
        ("u", 2, 4, "view"),
        ("u", 1, 5, "view"),
    ]
    out = preprocess(table(rows), PreprocessConfig(dedupe_consecutive=True))
    assert decoded(out) == [[1, 1, 2, 1]]
    assert out.report["dropped: consecutive duplicates"] == 1
    kept = preprocess(table(rows), PreprocessConfig(dedupe_consecutive=False))
    assert len(kept.events) == 5
    # A repeat in a later session (gap > 30 min) is a revisit and stays.
    later = preprocess(table([("u", 1, 1, "view"), ("u", 1, 4000, "view")]), PreprocessConfig())
    assert decoded(later) == [[1, 1]]


def test_iterative_k_core_reaches_fixpoint():
    # Item 9 is rare; once it goes, user c is too short, which makes item 3 rare.
    rows = [
        ("a", 1, 1, "view"),
        ("a", 2, 2, "view"),
        ("b", 1, 1, "view"),
        ("b", 2, 2, "view"),
        ("c", 3, 1, "view"),
        ("c", 9, 2, "view"),
        ("d", 3, 1, "view"),
        ("d", 1, 2, "view"),
        ("d", 2, 3, "view"),
    ]
    once = preprocess(table(rows), PreprocessConfig(min_item_count=2, min_sequence_length=2))
    core = preprocess(table(rows), PreprocessConfig(min_item_count=2, min_sequence_length=2, k_core=True))
    assert 3 in set(once.item_vocab["item_id"])
    assert set(core.item_vocab["item_id"]) == {1, 2}
    counts = core.events.groupby("item").size()
    assert (counts >= 2).all() and (core.events.groupby("seq").size() >= 2).all()
    dropped = sum(v for k, v in core.report.items() if k.startswith("dropped"))
    assert core.report["rows read"] - dropped == core.report["events kept"] == len(core.events)


def test_sessionization_by_inactivity_gap():
    rows = [("u", 1, 0, "view"), ("u", 2, 600, "view"), ("u", 3, 600 + 1801, "view"), ("v", 4, 700, "view")]
    out = preprocess(table(rows), PreprocessConfig(session_gap_minutes=30), sequence_key="session")
    assert decoded(out) == [[1, 2], [3], [4]]
    assert out.sequence_keys["user_id"].tolist() == ["u", "u", "v"]


def test_order_only_data_refuses_sessionization():
    rows = [("u", 1, 0, "view"), ("u", 2, 1, "view")]
    with pytest.raises(DataError, match="no real timestamps"):
        preprocess(table(rows, has_timestamps=False), PreprocessConfig(), sequence_key="session")
    out = preprocess(table(rows, has_timestamps=False), PreprocessConfig())
    assert (out.events["session"] == -1).all()


def test_truncation_keeps_most_recent_and_counts():
    rows = [("u", i, i, "view") for i in range(1, 8)]
    out = preprocess(table(rows), PreprocessConfig(max_sequence_length=3))
    assert decoded(out) == [[5, 6, 7]]
    assert out.report["dropped: beyond the most recent 3 events"] == 4


def test_keep_event_types_filter_counted():
    rows = [("u", 1, 1, "view"), ("u", 1, 2, "cart"), ("u", 2, 3, "view")]
    out = preprocess(table(rows), PreprocessConfig(keep_event_types=["view"]))
    assert decoded(out) == [[1, 2]] and out.report["dropped: event type not kept"] == 1


def test_item_attributes_join_vocabulary():
    items = pd.DataFrame({"item_id": [1, 2, 3], "price": [1.0, 2.0, 3.0]})
    out = preprocess(table([("u", 2, 1, "view"), ("u", 3, 2, "view")], items=items), PreprocessConfig())
    assert out.item_vocab[["item_id", "price"]].values.tolist() == [[2, 2.0], [3, 3.0]]
