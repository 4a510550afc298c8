"""Validation: every kind of bad input fails with one line naming file, column and an example."""

from __future__ import annotations

import pandas as pd
import pytest

from shopformer.data.schema import DataValidationError, parse_timestamps, validate_events
from shopformer.data.sources import TabularSource


def write_csv(tmp_path, text: str, name: str = "events.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load_error(path: str, **kwargs) -> str:
    with pytest.raises(DataValidationError) as info:
        TabularSource(path=path, **kwargs).load()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_column_names_file_and_column(tmp_path):
    path = write_csv(tmp_path, "user_id,timestamp\n1,100\n")
    message = load_error(path)
    assert path in message and "'item_id'" in message and "user_id, timestamp" in message


def test_mapped_column_absent_names_both_names(tmp_path):
    path = write_csv(tmp_path, "user_id,sku,timestamp\n1,5,100\n")
    message = load_error(path, columns={"item_id": "product"})
    assert "'product'" in message and "'item_id'" in message


def test_null_item_id_names_line_and_value(tmp_path):
    path = write_csv(tmp_path, "user_id,item_id,timestamp\n1,10,100\n1,,101\n2,11,102\n")
    message = load_error(path)
    assert path in message and "'item_id'" in message and "null ids" in message
    assert "line 3" in message


def test_garbage_timestamp_names_value(tmp_path):
    path = write_csv(tmp_path, "user_id,item_id,timestamp\n1,10,2024-01-01\n1,11,yesterday\n")
    message = load_error(path)
    assert "'timestamp'" in message and "'yesterday'" in message and "line 3" in message


def test_out_of_range_timestamp_suggests_unit(tmp_path):
    path = write_csv(tmp_path, "user_id,item_id,timestamp\n1,10,1700000000000\n")
    message = load_error(path, timestamp_unit="s")
    assert "1970..2100" in message and "timestamp_unit" in message
    ok = TabularSource(path=path, timestamp_unit="ms").load()
    assert ok.events["timestamp"].iloc[0] == 1_700_000_000
    # The default (auto) tells milliseconds from seconds by magnitude.
    assert TabularSource(path=path).load().events["timestamp"].iloc[0] == 1_700_000_000


def test_negative_timestamp_rejected(tmp_path):
    path = write_csv(tmp_path, "user_id,item_id,timestamp\n1,10,-5\n")
    assert "-5" in load_error(path)


def test_unknown_event_type_with_fixed_vocabulary(tmp_path):
    path = write_csv(tmp_path, "user_id,item_id,timestamp,event_type\n1,10,5,view\n1,10,6,wishlist\n")
    message = load_error(path, event_vocabulary=["view", "cart", "purchase"])
    assert "'event_type'" in message and "'wishlist'" in message


def test_valid_csv_normalised(tmp_path):
    path = write_csv(
        tmp_path,
        "customer,sku,when,action\na,X1,2024-01-01T00:00:00Z,View\na,X2,2024-01-01 00:01:00,PURCHASE\n",
    )
    table = TabularSource(
        path=path,
        columns={"user_id": "customer", "item_id": "sku", "timestamp": "when", "event_type": "action"},
    ).load()
    ev = table.events
    assert list(ev["timestamp"]) == [1704067200, 1704067260]
    assert list(ev["event_type"]) == ["view", "purchase"]
    assert list(ev["item_id"]) == ["X1", "X2"]


def test_event_type_defaults_to_view_and_needs_an_id_column():
    df = pd.DataFrame({"user_id": [1, 2], "item_id": [3, 4], "timestamp": [10, 20]})
    assert set(validate_events(df, "mem")["event_type"]) == {"view"}
    with pytest.raises(DataValidationError, match="user_id"):
        validate_events(df.drop(columns="user_id"), "mem")


def test_float_seconds_are_floored():
    out = parse_timestamps(pd.Series([1.9, 2.2]), "mem")
    assert list(out) == [1, 2]


def test_parquet_input(tmp_path):
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": [1], "item_id": [None], "timestamp": [5]}).to_parquet(path)
    message = load_error(str(path))
    assert "row 1" in message and "null ids" in message


def test_item_table_duplicates_and_prices(tmp_path):
    events = write_csv(tmp_path, "user_id,item_id,timestamp\n1,10,5\n")
    items = write_csv(tmp_path, "item_id,price\n10,1.5\n10,2\n", name="items.csv")
    assert "repeats item ids" in load_error(events, items_path=items)
    items = write_csv(tmp_path, "item_id,price\n10,cheap\n", name="items2.csv")
    assert "'price'" in load_error(events, items_path=items)
