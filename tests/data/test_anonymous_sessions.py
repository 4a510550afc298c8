"""Own event logs as users export them: anonymous sessions, mappings, separators, timestamp kinds."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from shopformer.data.preprocess import PreprocessConfig, preprocess, unaccounted_rows
from shopformer.data.schema import DataValidationError
from shopformer.data.sources import TabularSource
from shopformer.errors import ConfigError

ANONYMOUS = (
    "user_id;session;item_id;timestamp\n"
    ";s1;10;1700000000\n"
    "u1;s1;11;1700000010\n"
    ";s1;12;1700000020\n"
    ";s2;10;1700000100\n"
    ";s2;13;1700000110\n"
    "u2;s3;11;1700000200\n"
    ";s3;14;1700000210\n"
)


def write(tmp_path, text: str, name: str = "events.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(path: str, **kwargs) -> pd.DataFrame:
    return TabularSource(path=path, **kwargs).load().events


def error(path: str, **kwargs) -> str:
    with pytest.raises(DataValidationError) as info:
        TabularSource(path=path, **kwargs).load()
    message = str(info.value)
    assert "\n" not in message
    return message


def sequences(out) -> dict:
    """Raw item ids per sequence key."""
    raw = out.item_vocab.set_index("item")["item_id"]
    keys = out.sequence_keys.set_index("seq")["key"]
    return {keys[s]: list(raw[g["item"]]) for s, g in out.events.groupby("seq")}


def test_partly_empty_user_ids_load_when_sessions_are_present(tmp_path):
    table = TabularSource(path=write(tmp_path, ANONYMOUS), columns={"session_id": "session"}).load()
    ev = table.events
    assert len(ev) == 7 and ev["user_id"].isna().sum() == 5
    assert ev["session_id"].tolist() == ["s1", "s1", "s1", "s2", "s2", "s3", "s3"]

    by_session = preprocess(table, PreprocessConfig(), sequence_key="session")
    assert len(by_session.events) == 7 and unaccounted_rows(by_session.report) == 0
    assert by_session.sequence_keys["user_id"].tolist()[:1] == ["u1"]
    assert pd.isna(by_session.sequence_keys["user_id"].iloc[1])  # s2 never logged in

    # Per user: a session takes the user known on any of its rows; s2 stays a visitor of its own.
    by_user = preprocess(table, PreprocessConfig(), sequence_key="user")
    assert sequences(by_user) == {"u1": [10, 11, 12], "u2": [11, 14], "session s2": [10, 13]}
    assert by_user.report["user ids taken from their session"] == 3
    assert by_user.report["rows of anonymous sessions, each its own sequence"] == 2
    assert unaccounted_rows(by_user.report) == 0


def test_without_session_ids_the_error_shows_the_files_text(tmp_path):
    path = write(tmp_path, "user_id,item_id,timestamp\nu1,10,5\nNULL,11,6\n,12,7\n")
    message = error(path)
    assert message.startswith(f"{path}: column 'user_id' has null ids")
    assert "2 bad row(s), first at line 3: user_id='NULL'" in message
    assert "data.columns.session_id" in message and "np.float64" not in message


def test_user_column_can_be_ignored_with_null(tmp_path):
    path = write(tmp_path, "user_id,session_id,item_id,timestamp\n,a,1,5\n,a,2,6\n,b,1,7\n")
    ev = load(path, columns={"user_id": None})
    assert "user_id" not in ev and ev["session_id"].tolist() == ["a", "a", "b"]


def test_mapping_wins_over_a_column_with_the_canonical_name(tmp_path):
    path = write(tmp_path, "user_id,customer,item_id,timestamp\nx,c1,1,5\nx,c2,2,6\n")
    ev = load(path, columns={"user_id": "customer"})
    assert ev["user_id"].tolist() == ["c1", "c2"]
    # A column mapped to its own name is optional; any other mapped name must exist.
    assert len(load(path, columns={"session_id": "session_id"})) == 2
    assert "missing column 'sid' (mapped to 'session_id'" in error(path, columns={"session_id": "sid"})
    with pytest.raises(ConfigError, match="data.columns.userid"):
        load(path, columns={"userid": "customer"})


def test_order_is_taken_only_when_mapped(tmp_path):
    path = write(tmp_path, "user_id,item_id,timestamp,order\nu,1,2024-03-01,9\nu,2,2024-03-01,3\n")
    assert "order" not in load(path)  # a column named 'order' may well be an order id
    assert load(path, columns={"order": "order"})["order"].tolist() == [9, 3]


@pytest.mark.parametrize(
    ("sep", "char"),
    [("auto", ";"), ("semicolon", ";"), (";", ";"), ("tab", "\t"), ("\\t", "\t"), ("auto", "\t"),
     ("pipe", "|"), ("auto", "|"), ("comma", ","), ("auto", ",")],
)  # fmt: skip
def test_separators_by_name_character_or_sniffed(tmp_path, sep, char):
    text = "user_id,item_id,timestamp,event_type\nu1,10,5,view\nu1,11,6,cart\n".replace(",", char)
    ev = load(write(tmp_path, text), sep=sep)
    assert ev["item_id"].tolist() == [10, 11] and ev["event_type"].tolist() == ["view", "cart"]


def test_sniffing_is_decided_by_the_header_not_by_values(tmp_path):
    # Semicolons inside a comma file's values (quoted or not) do not make it ';'-separated.
    text = 'user_id,item_id,timestamp,event_type\n"a;b",10,5,view\nc;d,11,6,view\n'
    assert load(write(tmp_path, text))["user_id"].tolist() == ["a;b", "c;d"]
    gz = tmp_path / "events.csv.gz"
    gz.write_bytes(gzip.compress(ANONYMOUS.encode()))
    assert len(load(str(gz), columns={"session_id": "session"})) == 7


def test_wrong_separator_names_the_one_used(tmp_path):
    path = write(tmp_path, ANONYMOUS)
    message = error(path, sep="comma")
    assert "file has: user_id;session;item_id;timestamp" in message and "comma-separated" in message
    with pytest.raises(ConfigError, match="semicolon"):
        load(path, sep="")  # what a shell leaves of a bare `sep=;`


def test_timestamp_units_sniffed_by_magnitude(tmp_path):
    seconds = write(tmp_path, "user_id,item_id,timestamp\nu,1,1700000000\nu,2,1700000001.9\n", "s.csv")
    millis = write(tmp_path, "user_id,item_id,timestamp\nu,1,1700000000000\nu,2,1700000001999\n", "ms.csv")
    assert load(seconds)["timestamp"].tolist() == [1700000000, 1700000001]
    assert load(millis)["timestamp"].tolist() == [1700000000, 1700000001]
    assert load(millis, timestamp_unit="ms")["timestamp"].tolist() == [1700000000, 1700000001]
    # One stray value does not tip the unit: it is the one reported.
    mixed = write(tmp_path, "user_id,item_id,timestamp\nu,1,1700000000\nu,2,1700000002\nu,3,9e15\n", "x.csv")
    assert "outside 1970..2100" in error(mixed) and "timestamp='9e15'" in error(mixed)


def test_day_only_dates_ordered_by_an_order_column(tmp_path):
    text = (
        "visitor,visit,product,day,step\n"
        "v,1,30,2024-03-01,3\nv,1,10,2024-03-01,1\nv,1,20,2024-03-01,2\nv,2,40,2024-03-02,1\n"
    )
    columns = {"user_id": "visitor", "session_id": "visit", "item_id": "product", "timestamp": "day"}
    table = TabularSource(path=write(tmp_path, text), columns={**columns, "order": "step"}).load()
    assert table.events["timestamp"].tolist()[:2] == [1709251200, 1709251200]
    assert sequences(preprocess(table, PreprocessConfig())) == {"v": [10, 20, 30, 40]}
    bad = write(tmp_path, text.replace("v,1,20,2024-03-01,2", "v,1,20,2024-03-01,second"), "bad.csv")
    message = error(bad, columns={**columns, "order": "step"})
    assert "column 'step' (order)" in message and "line 4" in message and "'second'" in message


def test_blank_lines_are_dropped_and_counted_and_lines_stay_right(tmp_path):
    path = write(tmp_path, "user_id,item_id,timestamp\nu,1,5\n\n,,\nu,2,6\nu,,7\n")
    message = error(path)
    assert "line 6" in message and "item_id=''" in message
    table = TabularSource(
        path=write(tmp_path, "user_id,item_id,timestamp\nu,1,5\n\nu,2,6\n", "ok.csv")
    ).load()
    assert len(table.events) == 2 and table.dropped == {"blank lines": 1}
    out = preprocess(table, PreprocessConfig())
    assert out.report["rows in source"] == 3 and unaccounted_rows(out.report) == 0


@pytest.mark.parametrize("opener", [None, gzip.compress])
def test_blank_lines_above_the_header_are_skipped_and_lines_stay_right(tmp_path, opener):
    text = "\n\r\n  \nuser_id,item_id,timestamp\nu,1,5\nu,2,6\n"
    name = "events.csv" if opener is None else "events.csv.gz"
    path = tmp_path / name
    path.write_bytes(text.encode() if opener is None else opener(text.encode()))
    table = TabularSource(path=str(path)).load()
    assert len(table.events) == 2 and table.dropped == {}
    path.write_bytes((text + "u,3,x\n").encode() if opener is None else opener((text + "u,3,x\n").encode()))
    assert "line 7" in error(str(path)) and "timestamp='x'" in error(str(path))


def test_rows_without_a_session_id_are_sessionized_by_gap(tmp_path):
    text = "user_id,session_id,item_id,timestamp\nu,a,1,0\nu,,2,100\nu,,3,10000\nw,,4,50\n"
    out = preprocess(TabularSource(path=write(tmp_path, text)).load(), PreprocessConfig(), "session")
    assert sorted(map(len, sequences(out).values())) == [1, 1, 1, 1]
    assert out.report["rows without a session id, sessionized by inactivity gap"] == 3
    assert "both empty" in error(write(tmp_path, text + ",,5,60\n", "both.csv"))


def test_parquet_with_missing_users_and_typed_values(tmp_path):
    path = tmp_path / "events.parquet"
    frame = pd.DataFrame(
        {"user_id": [None, "u", None], "session_id": [1, 1, 2], "item_id": [5, 6, 7], "timestamp": [1, 2, 3]}
    )
    frame.to_parquet(path)
    assert load(str(path))["user_id"].isna().tolist() == [True, False, True]
    frame.assign(timestamp=[1.0, np.inf, 3.0]).to_parquet(path)
    message = error(str(path))
    assert "row 2: timestamp=inf" in message


def test_long_and_unicode_values_are_shortened_in_one_line(tmp_path):
    long_id = "é" * 10_000
    path = write(tmp_path, f"user_id,item_id,timestamp\n{long_id},1,later\n")
    message = error(path)
    assert len(message) < 400 and "'later'" in message
    assert (
        load(write(tmp_path, f"user_id,item_id,timestamp\n{long_id},1,5\n", "ok.csv"))["user_id"][0]
        == long_id
    )
