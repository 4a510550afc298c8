"""The serving logs' writer: nothing lost or doubled, never blocking, rotation, crash recovery, bad disks."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shopformer.errors import DataError, RequestError
from shopformer.serve import log_journal
from shopformer.serve.event_log import EventLog, read_log
from shopformer.serve.log_schemas import (
    FEEDBACK_SCHEMA,
    IMPRESSION_SCHEMA,
    feedback_row,
    impression_row,
    record_batch,
)

CRASH = """
import os, signal, sys
from shopformer.serve.event_log import EventLog
from shopformer.serve.log_schemas import FEEDBACK_SCHEMA, feedback_row
log = EventLog(sys.argv[1], FEEDBACK_SCHEMA, kind="feedback", flush_interval=3600)
for b in range(3):
    for i in range(100):
        log.append(feedback_row(request_id=f"r{b * 100 + i}", item_id=i, event="click", time=1.8e9 + b))
    log.flush()
for i in range(50):  # queued, never flushed: the crash loses them
    log.append(feedback_row(request_id=f"lost{i}", item_id=i, event="click"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def rows(n: int, prefix: str = "r") -> list[dict]:
    return [
        feedback_row(request_id=f"{prefix}{i}", item_id=i, event="click", time=1.8e9 + i) for i in range(n)
    ]


def request_ids(directory: Path) -> list[str]:
    return sorted(read_log(directory, "feedback").column("request_id").to_pylist())


def open_log(directory: Path, **options) -> EventLog:
    options.setdefault("flush_interval", 3600)  # the tests flush by hand unless they say otherwise
    return EventLog(directory, FEEDBACK_SCHEMA, kind="feedback", **options)


def test_rows_from_many_threads_land_exactly_once(tmp_path):
    log = open_log(tmp_path, flush_interval=0.005, rotate_bytes=20_000)
    threads = [
        threading.Thread(target=lambda t=t: [log.append(r) for r in rows(1500, f"t{t}-")]) for t in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    expected = sorted(f"t{t}-{i}" for t in range(8) for i in range(1500))
    assert request_ids(tmp_path) == expected
    stats = log.stats()
    assert stats["appended"] == stats["written"] == 12_000 and stats["dropped"] == 0
    assert stats["files"] == len(list(tmp_path.glob("feedback-*.parquet"))) > 1
    assert not list(tmp_path.glob("*.arrows")) and not list(tmp_path.glob("*.tmp"))


def test_append_never_waits_for_slow_io(tmp_path, monkeypatch):
    writing, released = threading.Event(), threading.Event()

    def slow_sync(file):
        writing.set()
        time.sleep(0.5)
        released.set()
        file.flush()

    monkeypatch.setattr(log_journal, "sync_file", slow_sync)
    log = open_log(tmp_path, flush_interval=0.005)
    log.append(rows(1, "first")[0])
    assert writing.wait(5)
    many = rows(10_000)
    start = time.perf_counter()
    for row in many:
        log.append(row)
    elapsed = time.perf_counter() - start
    assert not released.is_set(), "the appends had to outlast the slow write to show anything"
    assert elapsed < 0.4
    log.close()
    assert len(request_ids(tmp_path)) == 10_001


def test_rotation_by_size_keeps_every_row(tmp_path):
    with open_log(tmp_path, rotate_bytes=1) as log:  # every batch closes its journal
        for group in range(4):
            for row in rows(30, f"g{group}-"):
                log.append(row)
            log.flush()
    assert len(list(tmp_path.glob("feedback-*.parquet"))) == 4 == log.stats()["files"]
    assert request_ids(tmp_path) == sorted(f"g{g}-{i}" for g in range(4) for i in range(30))


def test_rotation_by_time_seals_idle_journals(tmp_path):
    log = open_log(tmp_path, flush_interval=0.01, rotate_seconds=0.05)
    for row in rows(20):
        log.append(row)
    deadline = time.monotonic() + 10
    while not list(tmp_path.glob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert list(tmp_path.glob("*.parquet")), "the writer thread never rotated the idle journal"
    assert not list(tmp_path.glob("*.arrows"))
    for row in rows(20, "late"):
        log.append(row)
    log.close()
    assert len(list(tmp_path.glob("*.parquet"))) >= 2
    assert request_ids(tmp_path) == sorted([f"r{i}" for i in range(20)] + [f"late{i}" for i in range(20)])


@pytest.fixture(scope="module")
def crashed(tmp_path_factory) -> Path:
    """A log directory whose writer was SIGKILLed after three flushed batches of 100 rows."""
    directory = tmp_path_factory.mktemp("crashed")
    done = subprocess.run([sys.executable, "-c", CRASH, str(directory)], capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr.decode()
    assert len(list(directory.glob("feedback-*.arrows"))) == 1
    return directory


def test_the_next_start_recovers_every_flushed_row(crashed, tmp_path, caplog):
    directory = Path(shutil.copytree(crashed, tmp_path / "log"))
    with caplog.at_level(logging.WARNING, logger="shopformer.serve"):
        log = open_log(directory, flush_interval=1.0)
    log.close()
    [recovery] = log.recovered
    assert recovery.rows == 300 and recovery.torn_bytes == 0
    assert "feedback: recovered 300 rows from an unfinished log segment feedback-" in recovery.message
    assert "(last row at 2027-01-15T08:00:02Z)" in recovery.message
    assert "at most the rows of the last 1 s flush interval" in recovery.message
    assert recovery.message in caplog.text
    assert log.stats()["recovered"] == 300
    assert request_ids(directory) == sorted(f"r{i}" for i in range(300))
    assert not list(directory.glob("*.arrows"))


def test_a_torn_last_batch_is_dropped_and_reported(crashed, tmp_path):
    directory = Path(shutil.copytree(crashed, tmp_path / "log"))
    [journal] = directory.glob("*.arrows")
    os.truncate(journal, journal.stat().st_size - 7)
    log = open_log(directory)
    log.close()
    [recovery] = log.recovered
    assert recovery.rows == 200 and recovery.torn_bytes > 0
    assert f"dropped a torn last batch of {recovery.torn_bytes:,} bytes" in recovery.message
    assert request_ids(directory) == sorted(f"r{i}" for i in range(200))


def test_a_live_journal_is_not_recovered_by_a_second_writer(tmp_path):
    first = open_log(tmp_path)
    for row in rows(10):
        first.append(row)
    first.flush()
    second = open_log(tmp_path)  # another server process on the same directory
    assert second.recovered == []
    assert len(list(tmp_path.glob("*.arrows"))) == 1
    for row in rows(5, "second"):
        second.append(row)
    second.close()
    first.close()
    assert request_ids(tmp_path) == sorted([f"r{i}" for i in range(10)] + [f"second{i}" for i in range(5)])


def test_a_failing_disk_drops_counts_logs_once_and_recovers(tmp_path, monkeypatch, caplog):
    log = open_log(tmp_path)
    for row in rows(10, "before"):
        log.append(row)
    log.flush()

    def full(file):
        raise OSError(28, "No space left on device")

    with caplog.at_level(logging.WARNING, logger="shopformer.serve"):
        monkeypatch.setattr(log_journal, "sync_file", full)
        for attempt in range(2):
            for row in rows(5, f"lost{attempt}-"):
                log.append(row)
            log.flush()
        assert log.stats()["dropped"] == 10
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "No space left on device" in errors[0].getMessage()
        monkeypatch.undo()
        for row in rows(7, "after"):
            log.append(row)
        log.flush()
    assert "writing works again (10 rows dropped so far)" in caplog.text
    log.close()
    assert request_ids(tmp_path) == sorted(
        [f"before{i}" for i in range(10)] + [f"after{i}" for i in range(7)]
    )
    assert log.stats()["written"] == 17


def test_rows_that_do_not_fit_the_schema_are_dropped_alone(tmp_path, caplog):
    log = open_log(tmp_path)
    good = rows(3)
    for row in (good[0], {**good[1], "time": "yesterday"}, good[2]):
        log.append(row)
    with caplog.at_level(logging.ERROR, logger="shopformer.serve"):
        log.close()
    assert log.stats()["dropped"] == 1 and "do not fit the schema" in caplog.text
    assert request_ids(tmp_path) == ["r0", "r2"]


def test_append_after_close_is_counted_not_raised(tmp_path):
    log = open_log(tmp_path)
    log.close()
    log.close()  # idempotent
    log.append(rows(1)[0])
    assert log.stats()["dropped"] == 1


def test_read_log_sees_open_journals_only_when_asked(tmp_path):
    log = open_log(tmp_path)
    for row in rows(4):
        log.append(row)
    log.flush()
    with pytest.raises(DataError, match="no feedback log segments"):
        read_log(tmp_path, "feedback")
    assert read_log(tmp_path, "feedback", include_open=True).num_rows == 4
    log.close()
    with pytest.raises(DataError, match="no such log directory"):
        read_log(tmp_path / "missing", "feedback")


def _impression(**values):
    """An impression row of a SASRec answer: ``values`` replace the defaults."""
    defaults = {"request_id": "q", "model_name": "sasrec", "model_version": "3", "policy": "greedy"}
    return impression_row(**{**defaults, "policy_version": "1", **values})


def test_row_helpers_stringify_ids_and_refuse_bad_values():
    row = _impression(
        session_items=[1, "2"],
        candidates=[10, 11],
        candidate_scores=[0.5, 0.25],
        shown=[11],
        propensities=[1.0],
        filters={"b": 1, "a": True},
    )
    assert row["session_items"] == (1, "2") and row["shown"] == (11,) and row["k"] == 1
    written = record_batch(
        [row, {**row, "session_items": [3, 4], "candidates": ["a", "b"]}], IMPRESSION_SCHEMA
    )
    assert written.column("session_items").to_pylist() == [["1", "2"], ["3", "4"]]
    assert written.column("candidates").to_pylist() == [["10", "11"], ["a", "b"]]
    assert written.column("shown").to_pylist() == [["11"], ["11"]]
    assert row["filters"] == '{"a":true,"b":1}'
    assert IMPRESSION_SCHEMA.names == list(row)
    with pytest.raises(ValueError, match="propensities: 2 values for 1 shown"):
        impression_row(**{**row, "propensities": [0.5, 0.5]})
    assert feedback_row(request_id="q", item_id=7, event="purchase", revenue="9.5")["revenue"] == 9.5
    with pytest.raises(RequestError, match="event: 'view' is not one of click, cart, purchase"):
        feedback_row(request_id="q", item_id=7, event="view")
    with pytest.raises(RequestError, match="revenue: 'abc' is not a number"):
        feedback_row(request_id="q", item_id=7, event="click", revenue="abc")


def test_waiting_impression_rows_leave_the_cyclic_gc_before_its_oldest_generation(tmp_path):
    """A second of queued rows must not pile up in the GC's oldest generation (it cost a logging
    server about 15 % of its throughput when rows held lists)."""
    row = _impression(
        policy="softmax",
        policy_version="2",
        session_items=list(range(150)),
        candidates=list(range(20)),
        candidate_scores=[0.5] * 20,
        shown=list(range(10)),
        propensities=[0.1] * 10,
        slate_propensity=1e-9,
        filters={"a": 1},
    )
    with EventLog(tmp_path, IMPRESSION_SCHEMA, kind="impressions", flush_interval=3600) as events:
        events.append(row)
        queued = events._queue.get_nowait()
        gc.collect(0)  # the young generations a row waiting for the writer goes through
        gc.collect(1)
        assert not gc.is_tracked(queued), [type(v).__name__ for v in queued if gc.is_tracked(v)]
        events._queue.put(queued)
    assert read_log(tmp_path, "impressions").num_rows == 1
