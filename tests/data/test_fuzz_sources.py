"""Fuzzing every file source and the preprocessing with random and adversarial tables.

Each input either loads or fails with a :class:`DataError` whose message is one line naming the
file; never another exception, a hang or silent loss: rows in the file = rows kept + rows reported
dropped, on every case that loads, through the source and through the preprocessing. The default
run tries a few dozen tables per property; ``-m slow`` tries many more.
"""

from __future__ import annotations

import csv
import gzip
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from shopformer.data.preprocess import PreprocessConfig, preprocess, unaccounted_rows
from shopformer.data.schema import EventTable
from shopformer.data.sources import (
    MovieLens100kSource,
    MovieLensChronoSource,
    S3RecTxtSource,
    SasrecTxtSource,
    TabularSource,
    TaobaoSource,
    YoochooseSource,
)
from shopformer.errors import DataError

QUICK, LONG = 80, 1000
COLUMNS = ("user_id", "session_id", "item_id", "timestamp", "event_type", "extra")
NASTY = ["", " ", "NULL", "null", "nan", "NaN", "None", "N/A", "0", "-1", "1.0", "1e3", "inf", "-inf", "007",
         '"', "'", ",", ";", "\t", "|", "a\nb", "x\ry", "é", "🛒", "\u200b", "x" * 10_000,
         "1" * 40]  # fmt: skip
SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def fuzz(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


text = st.text(max_size=12)
nasty = st.one_of(
    st.sampled_from(NASTY),
    text,
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
instants = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
nasty_time = st.one_of(
    nasty,
    st.integers(10**12, 4 * 10**12),  # milliseconds
    st.integers(10**15, 10**30),  # far future in any unit
    instants.map(datetime.isoformat),
    st.dates().map(str),
)
CLEAN = {
    "user_id": st.sampled_from(["u1", "u2", "u3", "", "7"]),
    "session_id": st.sampled_from(["s1", "s2", "s3", "4"]),
    "item_id": st.integers(1, 6),
    "timestamp": st.integers(1_600_000_000, 1_600_010_000),
    "event_type": st.sampled_from(["view", "cart", "purchase", "View"]),
    "extra": text,
}
NASTY_CELLS = {**{c: nasty for c in COLUMNS}, "timestamp": nasty_time}


def cell(value) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


@st.composite
def tables(draw, max_rows: int = 20) -> tuple[list[str], list[list[str]]]:
    """Column names and rows of text cells: mostly plausible, some cells (or all) adversarial."""
    columns = draw(st.lists(st.sampled_from(COLUMNS), unique=True, min_size=1, max_size=len(COLUMNS)))
    if draw(st.sampled_from([False, True, True, True])):  # mostly the columns a log needs
        columns = sorted(set(columns) | {"item_id", "timestamp", "session_id"}, key=COLUMNS.index)
    chaos = draw(st.sampled_from([0.0, 0.0, 0.05, 0.3, 1.0]))
    n = draw(st.integers(0, max_rows))
    rows = []
    for _ in range(n):
        rows.append(
            [cell(draw(NASTY_CELLS[c] if draw(st.floats(0, 1)) < chaos else CLEAN[c])) for c in columns]
        )
    if rows and draw(st.booleans()):
        rows += draw(st.lists(st.sampled_from(rows), max_size=5))  # duplicated rows
    if draw(st.booleans()):
        rows = draw(st.permutations(rows))  # out of order
    return columns, rows


def write_delimited(path: Path, columns: list[str], rows: list[list[str]], sep: str) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=sep)
        writer.writerow(columns)
        writer.writerows(rows)


def write_parquet(path: Path, columns: list[str], rows: list[list[str]]) -> None:
    """Typed columns where the cells allow it (numbers, with nulls for blanks), else text."""
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    for column in columns:
        cells = frame[column].where(frame[column] != "")
        numbers = pd.to_numeric(cells, errors="coerce")
        if cells.notna().any() and numbers.notna().sum() == cells.notna().sum():
            frame[column] = numbers
        else:
            frame[column] = cells.astype("string")
    frame.to_parquet(path)


def loads_or_fails_clearly(
    load: Callable[[], EventTable], origin: str, rows: int | None
) -> EventTable | None:
    """The table, or None after checking the error is one line naming the file; rows balance."""
    try:
        table = load()
    except DataError as exc:
        message = str(exc)
        event(f"load failed: {message.removeprefix(origin).split(';')[0][:60]}")
        assert "\n" not in message and "\r" not in message, message
        assert origin in message, message
        assert len(message) < 1_000, message
        return None
    event("loaded")
    if rows is not None:
        assert len(table.events) + sum(table.dropped.values()) == rows, table.dropped
    return table


def preprocesses_or_fails_clearly(table: EventTable, config: PreprocessConfig, key: str) -> None:
    try:
        out = preprocess(table, config, key)
    except DataError as exc:
        event("preprocessing failed")
        assert "\n" not in str(exc) and table.origin in str(exc), str(exc)
        return
    event("preprocessed")
    assert out.report["rows in source"] == len(table.events) + sum(table.dropped.values())
    assert unaccounted_rows(out.report) == 0, out.report
    assert out.report["events kept"] == len(out.events)
    assert out.events["item"].min() >= 1 and out.events["seq"].max() < len(out.sequence_keys)


configs = st.builds(
    PreprocessConfig,
    keep_event_types=st.sampled_from([None, ["view"], ["cart", "purchase"]]),
    dedupe_consecutive=st.booleans(),
    min_sequence_length=st.integers(0, 3),
    min_item_count=st.integers(0, 3),
    k_core=st.booleans(),
    session_gap_minutes=st.sampled_from([0.0, 30.0]),
    max_sequence_length=st.sampled_from([None, 1, 3]),
)
formats = st.sampled_from(["csv", "tsv", "csv.gz", "parquet"])


def check_tabular(table, file_format, sep, named, config, key) -> None:
    columns, rows = table
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"events.{file_format}"
        sep = "\t" if file_format == "tsv" else sep
        if file_format == "parquet":
            write_parquet(path, columns, rows)
        else:
            write_delimited(path, columns, rows, sep)
        source = TabularSource(path=str(path), sep=SEPARATORS[sep] if named else "auto")
        loaded = loads_or_fails_clearly(source.load, str(path), len(rows))
        if loaded is not None:
            preprocesses_or_fails_clearly(loaded, config, key)


tabular_cases = dict(
    table=tables(),
    file_format=formats,
    sep=st.sampled_from(sorted(SEPARATORS)),
    named=st.booleans(),
    config=configs,
    key=st.sampled_from(["user", "session"]),
)


@fuzz(QUICK)
@given(**tabular_cases)
def test_tabular_source_and_preprocessing(table, file_format, sep, named, config, key):
    check_tabular(table, file_format, sep, named, config, key)


@pytest.mark.slow
@fuzz(LONG)
@given(**tabular_cases)
def test_tabular_source_and_preprocessing_long(table, file_format, sep, named, config, key):
    check_tabular(table, file_format, sep, named, config, key)


@fuzz(QUICK)
@given(content=st.binary(max_size=400), header=st.booleans(), suffix=st.sampled_from(["csv", "parquet"]))
@example(content=b"\r\xc2\x80", header=False, suffix="csv")  # a blank line above the header (CI found it)
def test_arbitrary_bytes(content, header, suffix):
    """Any bytes at all (a truncated upload, a binary file, a broken Parquet footer)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"events.{suffix}"
        path.write_bytes((b"user_id,item_id,timestamp\n" if header else b"") + content)
        loads_or_fails_clearly(TabularSource(path=str(path)).load, str(path), None)


@fuzz(QUICK)
@given(
    rows=st.lists(
        st.tuples(CLEAN["user_id"], CLEAN["session_id"], CLEAN["item_id"], CLEAN["timestamp"]), max_size=30
    ),
    sep=st.sampled_from(sorted(SEPARATORS)),
)
def test_plausible_logs_always_load_and_keep_their_ids(rows, sep):
    """A log with session ids on every row and some user ids blank loads, ids exactly as written."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.csv"
        write_delimited(
            path, ["user_id", "session_id", "item_id", "timestamp"], [list(map(str, r)) for r in rows], sep
        )
        if not rows:
            assert loads_or_fails_clearly(TabularSource(path=str(path)).load, str(path), 0) is None
            return
        ev = TabularSource(path=str(path)).load().events
    assert [str(v) for v in ev["item_id"]] == [str(r[2]) for r in rows]
    assert [str(v) for v in ev["session_id"]] == [str(r[1]) for r in rows]
    assert [None if pd.isna(v) else str(v) for v in ev["user_id"]] == [r[0] or None for r in rows]


def lines_of(tokens: st.SearchStrategy, sizes: tuple[int, int], sep: str) -> st.SearchStrategy:
    """Lines of ``sep``-joined tokens (some lines empty)."""
    line = st.lists(tokens, min_size=sizes[0], max_size=sizes[1]).map(sep.join)
    return st.lists(st.one_of(line, line, st.just("")), max_size=15)


tokens = st.one_of(
    st.integers(1, 5).map(str),
    st.sampled_from(["NULL", "nan", "-3", "1.5", "inf", "é", '"', "'a", "1e400"]),
    st.text(st.characters(blacklist_categories=["Cs", "Zs", "Zl", "Zp", "Cc"]), min_size=1, max_size=8),
)


def named_case(tmp: Path, kind: str, lines: list[str], min_rating) -> tuple[Callable, list[Path], int]:
    """Write the lines in the layout of one named dataset; its source and the rows it should yield."""
    path = tmp / "data.txt"
    body = [line for line in lines if line]
    if kind == "s3rec":
        path.write_text("\n".join(lines) + "\n")
        tokens_per_line = [len(line.split()) for line in body]
        return S3RecTxtSource(path=str(path)).load, [path], sum(n - 1 for n in tokens_per_line)
    if kind == "sasrec":
        path.write_text("\n".join(lines) + "\n")
        return SasrecTxtSource(path=str(path)).load, [path], len(body)
    if kind == "ml100k":
        path.write_text("\n".join(lines) + "\n")
        return MovieLens100kSource(path=str(path), min_rating=min_rating).load, [path], len(body)
    if kind == "yoochoose":
        second = tmp / "test.txt"
        half = len(lines) // 2
        path.write_text("\n".join(["SessionId\tItemId\tTime", *lines[:half]]) + "\n")
        second.write_text("\n".join(["SessionId\tItemId\tTime", *lines[half:]]) + "\n")
        return YoochooseSource(paths=(str(path), str(second))).load, [path, second], len(body)
    header = (
        "user_id,item_id,category_id,behavior_type,timestamp"
        if kind == "taobao"
        else "user_id,item_id,seq_pos"
    )
    path.write_text("\n".join([header, *lines]) + "\n")
    source = TaobaoSource(path=str(path)) if kind == "taobao" else MovieLensChronoSource(path=str(path))
    return source.load, [path], len(body)


LAYOUTS = {
    "sasrec": (" ", (2, 2)),
    "s3rec": (" ", (1, 5)),
    "ml100k": ("\t", (4, 4)),
    "yoochoose": ("\t", (3, 3)),
    "taobao": (",", (5, 5)),
    "chrono": (",", (3, 3)),
}


def check_named(kind, data, min_rating, config) -> None:
    sep, sizes = LAYOUTS[kind]
    # Mostly the right number of fields per line, sometimes one too many or too few.
    sizes = data.draw(st.sampled_from([sizes, sizes, (sizes[0] - 1 or 1, sizes[1] + 1)]))
    lines = data.draw(lines_of(tokens, sizes, sep))
    with tempfile.TemporaryDirectory() as tmp:
        load, files, rows = named_case(Path(tmp), kind, lines, min_rating)
        table = loads_or_fails_clearly(load, tmp, rows)
    if table is not None:
        preprocesses_or_fails_clearly(table, config, "session" if kind == "yoochoose" else "user")


named_cases = dict(
    kind=st.sampled_from(sorted(LAYOUTS)),
    data=st.data(),
    min_rating=st.sampled_from([None, 3]),
    config=configs,
)


@fuzz(QUICK * 2)
@given(**named_cases)
def test_named_dataset_text_sources(kind, data, min_rating, config):
    check_named(kind, data, min_rating, config)


@pytest.mark.slow
@fuzz(LONG)
@given(**named_cases)
def test_named_dataset_text_sources_long(kind, data, min_rating, config):
    check_named(kind, data, min_rating, config)


@pytest.mark.parametrize("megabytes", [1, pytest.param(100, marks=pytest.mark.slow)])
def test_big_one_column_file_and_one_big_cell(tmp_path, megabytes):
    """Fail fast and in one short line: a file of ids only, a timestamp cell of many megabytes."""
    size = megabytes * 2**20
    column = tmp_path / "ids.csv"
    line = b"1234567890\n"
    column.write_bytes(b"item_id\n" + line * (size // len(line)))
    cell = tmp_path / "cell.csv"
    cell.write_bytes(b"user_id,item_id,timestamp\nu,1," + b"9" * size + b"\n")
    for path, expected in ((column, "missing column 'timestamp'"), (cell, "unparseable timestamps")):
        started = time.perf_counter()
        with pytest.raises(DataError) as info:
            TabularSource(path=str(path)).load()
        assert time.perf_counter() - started < 60  # a date parser fed a 100 MB cell took hours
        message = str(info.value)
        assert expected in message and str(path) in message and len(message) < 400
