"""The serving logs written by a child process: every row once, stop signals ignored until closed, a
dead child replaced by the in-process writer, a dead server's rows still sealed into Parquet."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shopformer.serve.log_process import ProcessEventLog
from shopformer.serve.log_schemas import FEEDBACK_SCHEMA
from tests.serve.test_event_log import request_ids, rows

PARENT_CRASH = """
import os, signal, sys
from shopformer.serve.log_process import ProcessEventLog
from shopformer.serve.log_schemas import FEEDBACK_SCHEMA, feedback_row
log = ProcessEventLog(sys.argv[1], FEEDBACK_SCHEMA, kind="feedback", flush_interval=3600)
print(log._process.pid, flush=True)
for i in range(120):
    log.append(feedback_row(request_id=f"r{i}", item_id=i, event="click", time=1.8e9 + i))
log.flush()
for i in range(30):  # queued in the server, never handed over: the crash loses them
    log.append(feedback_row(request_id=f"lost{i}", item_id=i, event="click"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def open_log(directory: Path, **options) -> ProcessEventLog:
    options.setdefault("flush_interval", 3600)  # the tests flush by hand unless they say otherwise
    return ProcessEventLog(directory, FEEDBACK_SCHEMA, kind="feedback", **options)


def wait_gone(pid: int, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_rows_land_once_and_the_child_exits_on_close(tmp_path):
    log = open_log(tmp_path, flush_interval=0.05)
    for row in rows(300):
        log.append(row)
    deadline = time.monotonic() + 20
    while log.stats()["written"] < 300 and time.monotonic() < deadline:  # handed over by the thread
        time.sleep(0.05)
    assert log.stats()["written"] == 300
    for row in rows(50, "late"):
        log.append(row)
    log.close()
    assert log._process.poll() == 0
    stats = log.stats()
    assert (stats["appended"], stats["written"], stats["queued"], stats["dropped"]) == (350, 350, 0, 0)
    assert stats["files"] == 1 and not list(tmp_path.glob("*.arrows"))
    assert request_ids(tmp_path) == sorted([f"r{i}" for i in range(300)] + [f"late{i}" for i in range(50)])


def test_a_stop_signal_does_not_stop_the_child_before_the_server_closes_it(tmp_path):
    log = open_log(tmp_path)
    for row in rows(10):
        log.append(row)
    os.kill(log._process.pid, signal.SIGTERM)  # as a stop signal to the whole process group would
    time.sleep(0.3)
    for row in rows(10, "after"):
        log.append(row)
    log.close()
    assert log._process.returncode == 0
    assert len(request_ids(tmp_path)) == 20


def test_a_dead_child_is_replaced_by_the_in_process_writer(tmp_path, caplog):
    log = open_log(tmp_path)
    for row in rows(100):
        log.append(row)
    log.flush()  # written by the child
    log._process.kill()
    log._process.wait()
    for row in rows(40, "after"):
        log.append(row)
    with caplog.at_level(logging.WARNING, logger="shopformer.serve"):
        log.flush()
        log.close()
    assert "feedback: the log writer process has gone" in caplog.text
    assert "feedback: recovered 100 rows" in caplog.text  # the child's journal, its lock gone with it
    assert request_ids(tmp_path) == sorted([f"r{i}" for i in range(100)] + [f"after{i}" for i in range(40)])
    assert log.stats()["written"] == 140


def test_when_the_server_dies_the_child_seals_what_it_was_given(tmp_path):
    crash = subprocess.run(
        [sys.executable, "-c", PARENT_CRASH, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert crash.returncode == -signal.SIGKILL, crash.stderr
    assert wait_gone(int(crash.stdout.split()[0]))
    assert request_ids(tmp_path) == sorted(f"r{i}" for i in range(120))
    assert not list(tmp_path.glob("*.arrows"))  # sealed into Parquet, nothing left to recover
