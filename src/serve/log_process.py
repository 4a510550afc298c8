"""A serving log written by a child process: the server only queues rows and hands them over once per
flush interval, so the Arrow conversion, the journal and the Parquet files take no time from the
server's own Python thread (they hold the GIL, which the event loop needs for every request).

Measured in the server at 630 requests/s (``benchmarks/serving.py``, per-thread CPU from ``/proc``): the
in-process writer thread used 45-52 µs of CPU per logged row, serialised with the event loop by the
GIL; pickling a row for the child costs about 3.5 µs.

:class:`ProcessEventLog` has :class:`~shopformer.serve.event_log.EventLog`'s interface. The child runs
an ``EventLog`` on the directory and writes each handed-over batch at once, so a crash of either
process still loses at most the rows of the last flush interval. The child ignores SIGTERM and SIGINT
(a stop signal reaches the whole process group): it stops when the server closes the log, or when the
pipe breaks because the server died, writing everything it received either way. If the child dies,
the server goes on with an in-process ``EventLog`` on the same directory, which recovers the child's
journal (its lock died with it) and says so. Messages are pickled: both ends are this package, over a
private socket pair.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pyarrow as pa

from shopformer.errors import ConfigError, one_line
from shopformer.serve.event_log import EventLog, QueuedLog
from shopformer.serve.log_journal import Recovery

log = logging.getLogger("shopformer.serve")
START_SECONDS = 60.0  # the child imports pyarrow; a busy machine may take a while
CLOSE_SECONDS = 120.0  # converting the last journal to Parquet


class ProcessEventLog(QueuedLog):
    """An :class:`EventLog` whose writing happens in a child process (see the module docstring)."""

    def __init__(
        self,
        directory: str | os.PathLike,
        schema: pa.Schema,
        *,
        kind: str,
        flush_interval: float = 1.0,
        rotate_bytes: int = 64 << 20,
        rotate_seconds: float = 3600.0,
        max_pending: int = 1_000_000,
    ) -> None:
        self.directory = Path(directory)
        self._init_queue(schema, kind, flush_interval, max_pending)
        self._options = {
            "flush_interval": flush_interval,
            "rotate_bytes": rotate_bytes,
            "rotate_seconds": rotate_seconds,
        }
        self._received = self._sent = 0  # rows taken from the queue, rows the child was given
        self._messages = self._replies = 0  # to and from the child
        self._child_stats: dict[str, int] = {}
        self._fallback: EventLog | None = None
        self._process, self._conn, self.recovered = self._start_child()
        self._start_thread()

    def _start_child(self) -> tuple[subprocess.Popen, Connection, list[Recovery]]:
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "shopformer.serve.log_process", str(theirs.fileno())]
        process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        conn = Connection(ours.detach())
        conn.send((str(self.directory), self.schema, self.kind, self._options))
        if not conn.poll(START_SECONDS):
            process.kill()
            raise ConfigError(f"{self.kind} log: its writer process did not start in {START_SECONDS:g} s")
        try:
            status, payload = conn.recv()
        except EOFError:
            status, payload = "error", f"its writer process exited with code {process.wait()}"
        if status != "ready":
            process.wait()
            raise ConfigError(f"{self.kind} log: {payload}")
        return process, conn, payload

    def close(self) -> None:
        """Write everything, let the child convert its journal to Parquet and exit; idempotent."""
        if not self._stop_thread():
            return
        with self._io:
            self._tick(final=True)
            if self._fallback is not None:
                self._fallback.close()
        self._conn.close()
        try:
            self._process.wait(CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            log.error("%s: the log writer process did not exit; killed (the next start recovers)", self.kind)
            self._process.kill()

    def stats(self) -> dict[str, int]:
        """Counters as :meth:`EventLog.stats`: the child's, plus what this process still holds."""
        child = dict.fromkeys(("appended", "written", "dropped", "batches", "files"), 0) | self._child_stats
        fallback = self._fallback.stats() if self._fallback is not None else {}
        queued = self._queue.qsize()
        return {
            "appended": self._received + queued,
            "queued": queued + max(0, self._sent - child["appended"]) + fallback.get("queued", 0),
            "written": child["written"] + fallback.get("written", 0),
            "dropped": child["dropped"] + fallback.get("dropped", 0) + self._refused,
            "batches": child["batches"] + fallback.get("batches", 0),
            "files": child["files"] + fallback.get("files", 0),
            "recovered": sum(r.rows for r in self.recovered),
        }

    def _tick(self, final: bool = False) -> None:
        """Hand the queued rows to the child (or to the fallback writer); ``flush`` and ``close`` (a
        ``final`` tick) then wait until the child has written them."""
        rows = self._drain()
        self._received += len(rows)
        waiting = threading.current_thread() is not self._thread  # flush() or close()
        if self._fallback is None and rows and self._message(("rows", rows)):
            self._sent += len(rows)
            rows = []
        if self._fallback is not None:  # the child has gone (maybe just now): write them here
            for row in rows:
                self._fallback.append(row)
            if waiting:
                self._fallback.flush()
            return
        if waiting and not self._message(("close" if final else "flush", None)):
            return
        self._read_replies(block=waiting)

    def _message(self, message: tuple[str, Any]) -> bool:
        try:
            self._conn.send(message)
        except OSError as exc:
            self._child_died(exc)
            return False
        self._messages += 1
        return True

    def _read_replies(self, block: bool) -> None:
        try:
            while self._replies < self._messages and self._conn.poll(CLOSE_SECONDS if block else 0):
                _, stats = self._conn.recv()
                self._replies += 1
                self._child_stats = stats
            if block and self._replies < self._messages:
                raise TimeoutError(f"no answer in {CLOSE_SECONDS:g} s")
        except (OSError, EOFError) as exc:  # TimeoutError is an OSError
            self._child_died(exc)

    def _child_died(self, exc: BaseException) -> None:
        if self._fallback is not None:
            return
        log.error(
            "%s: the log writer process has gone (%s; exit code %s); writing in this process from now on",
            self.kind,
            one_line(exc) or type(exc).__name__,
            self._process.poll(),
        )
        self._fallback = EventLog(self.directory, self.schema, kind=self.kind, **self._options)
        self.recovered = self.recovered + self._fallback.recovered


def serve(conn: Connection) -> None:
    """The child: an EventLog on the directory the parent names, fed by the parent's messages."""
    directory, schema, kind, options = conn.recv()
    try:
        event_log = EventLog(directory, schema, kind=kind, **options)
    except ConfigError as exc:
        conn.send(("error", str(exc)))
        return
    conn.send(("ready", event_log.recovered))
    try:
        while True:
            try:
                what, rows = conn.recv()
            except EOFError:  # the server died: write what came
                break
            if what == "rows":
                for row in rows:  # tuples in schema order, as the parent's queue held them
                    event_log.append_values(row)
            if what == "close":
                break
            event_log.flush()  # each batch at once: a crash loses at most the parent's last interval
            conn.send(("stats", event_log.stats()))
    finally:
        event_log.close()
    with contextlib.suppress(OSError):  # the server died: nobody to tell
        conn.send(("stats", event_log.stats()))


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the server tells us when to stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    args = sys.argv[1:] if argv is None else argv
    serve(Connection(int(args[0])))


if __name__ == "__main__":
    main()
