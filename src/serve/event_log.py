"""Append-only serving logs (impressions, feedback) as Parquet segments, written off the request path.

:meth:`EventLog.append` only puts the row on a queue: no IO, no lock, it never blocks a request. A
daemon thread wakes every ``flush_interval`` seconds, turns the queued rows into one Arrow record batch
and appends it to the open *journal*, an Arrow IPC stream ``<kind>-<UTC start>-<seq>.arrows``, flushed
and fsynced after each batch: a crash loses at most the rows of the last interval. A journal over
``rotate_bytes`` or older than ``rotate_seconds`` is converted into ``<same name>.parquet`` (temp file,
then ``os.replace``; the journal is deleted only after). :meth:`EventLog.close` writes everything.

A journal left by a crash is recovered by the next :class:`EventLog` on the directory: its complete
batches become Parquet, a torn last batch is dropped, and one line says how many rows came back
(:attr:`EventLog.recovered`). Several server processes may share a directory: each journal is locked
(``flock``) while its writer lives, so recovery never touches another live process's journal.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from shopformer.errors import ConfigError, DataError, one_line
from shopformer.serve.log_journal import JOURNAL, SEGMENT, Journal, Recovery, read_journal, recover
from shopformer.serve.log_schemas import record_batch

log = logging.getLogger("shopformer.serve")
KIND = re.compile(r"^[a-z0-9_]+$")  # no "-" or ".": file names split on them


class QueuedLog:
    """The request side of a serving log: :meth:`append` queues a row (no IO, no lock, never blocks or
    raises) and a daemon thread hands the queue to the subclass's :meth:`_tick` every
    ``flush_interval`` seconds; :meth:`flush` does it now, in the caller's thread."""

    def _init_queue(self, schema: pa.Schema, kind: str, flush_interval: float, max_pending: int) -> None:
        self.schema, self.kind = schema, kind
        self._names = tuple(schema.names)
        self.flush_interval, self.max_pending = flush_interval, max_pending
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._io = threading.Lock()  # the thread, flush() and close() take turns
        self._refused = 0  # rows append() turned away (closed, or over max_pending)
        self._refusing = threading.Lock()  # taken only on that (abnormal) path
        self._closed = False
        self._stop = threading.Event()

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"shopformer-log-{self.kind}", daemon=True)
        self._thread.start()

    def append(self, row: dict[str, Any]) -> None:
        """Queue one row for the writer; never blocks, never raises, never touches the disk."""
        # Queued as a tuple in schema order: with atomic values and tuples inside, it leaves the cyclic
        # GC at its first pass, so a second of waiting rows never burdens the older generations.
        try:
            values: tuple | dict[str, Any] = tuple(row[name] for name in self._names)
        except (KeyError, TypeError):  # does not fit: the writer drops it and counts it
            values = row
        self.append_values(values)

    def append_values(self, values: tuple | dict[str, Any]) -> None:
        """Queue one row given as a tuple in the schema's order (the hot path: no dict to reorder)."""
        if self._closed or self._queue.qsize() >= self.max_pending:
            self._refuse()
            return
        self._queue.put(values)

    def flush(self) -> None:
        """Write every queued row now, in the caller's thread."""
        with self._io:
            self._tick()

    def __enter__(self) -> QueuedLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError

    def _stop_thread(self) -> bool:
        """Refuse new rows and stop the thread; False when the log was closed already."""
        if self._closed:
            return False
        self._closed = True
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        return True

    def _refuse(self) -> None:
        with self._refusing:
            self._refused += 1
            first = self._refused == 1
        if first:
            why = "closed" if self._closed else f"{self.max_pending:,} rows are waiting for the disk"
            log.error("%s: rows are dropped (the log is %s); see stats()['dropped']", self.kind, why)

    def _drain(self, limit: int | None = None) -> list[Any]:
        rows: list[Any] = []
        try:
            while limit is None or len(rows) < limit:
                rows.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return rows

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                with self._io:
                    self._tick()
            except Exception:  # a bug: say so, keep the thread (and the log) alive
                log.exception("%s: the log writer failed; it retries in %g s", self.kind, self.flush_interval)

    def _tick(self, final: bool = False) -> None:
        raise NotImplementedError


class EventLog(QueuedLog):
    """An append-only log of row dicts of one ``kind`` in ``directory`` (see the module docstring)."""

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
        max_batch_rows: int = 100_000,
    ) -> None:
        if not KIND.match(kind):
            raise ConfigError(f"kind: {kind!r} must be lower-case letters, digits or _ (e.g. 'impressions')")
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"log directory {self.directory}: {one_line(exc)}") from None
        self._init_queue(schema, kind, flush_interval, max_pending)
        self.rotate_bytes, self.rotate_seconds = rotate_bytes, rotate_seconds
        self.max_batch_rows = max_batch_rows
        self.recovered: list[Recovery] = recover(self.directory, kind, flush_interval)
        self._journal: Journal | None = None
        self._sealing: list[Journal] = []  # rotated or failed journals not yet in Parquet
        self._seq = 0
        self._counts = dict.fromkeys(("received", "written", "batches", "files", "dropped"), 0)
        self._failing = False
        self._start_thread()

    def close(self) -> None:
        """Write everything, convert the open journal to Parquet and stop the thread; idempotent."""
        if not self._stop_thread():
            return
        with self._io:
            self._tick(final=True)
            for journal in self._sealing:  # the disk refused: the next start recovers these
                journal.release()
                log.error("%s: %s stays a journal; the next start recovers it", self.kind, journal.path)
            self._sealing.clear()

    def stats(self) -> dict[str, int]:
        """Counters: rows appended, queued, written, dropped; batches and Parquet files written."""
        c = self._counts
        queued = self._queue.qsize()
        return {
            "appended": c["received"] + queued,
            "queued": queued,
            "written": c["written"],
            "dropped": c["dropped"] + self._refused,
            "batches": c["batches"],
            "files": c["files"],
            "recovered": sum(r.rows for r in self.recovered),
        }

    def _tick(self, final: bool = False) -> None:
        self._rotate()  # an old journal first, so that new rows start a new one
        ok = self._write_queued()
        self._rotate(final)
        ok = self._seal_rotated() and ok
        if ok and self._failing:
            self._failing = False
            dropped = self.stats()["dropped"]
            log.warning("%s: writing works again (%s rows dropped so far)", self.kind, f"{dropped:,}")

    def _write_queued(self) -> bool:
        ok = True
        for _ in range(max(1, -(-self._queue.qsize() // self.max_batch_rows))):
            rows = self._drain(self.max_batch_rows)
            if not rows:
                break
            self._counts["received"] += len(rows)
            batch = self._batch(rows)
            if batch.num_rows:
                ok &= self._write(batch)
        return ok

    def _batch(self, rows: list[Any]) -> pa.RecordBatch:
        """The rows as one batch; rows that do not fit the schema are dropped (counted and logged)."""
        try:
            return record_batch(rows, self.schema)
        except Exception:  # find the bad rows only when there are some
            good, error = [], None
            for row in rows:
                try:
                    record_batch([row], self.schema)
                    good.append(row)
                except Exception as exc:
                    error = error or exc
            self._counts["dropped"] += len(rows) - len(good)
            log.error(
                "%s: dropped %d rows that do not fit the schema (%s)",
                self.kind,
                len(rows) - len(good),
                one_line(error or ValueError("?")),
            )
            return record_batch(good, self.schema)

    def _write(self, batch: pa.RecordBatch) -> bool:
        journal = self._journal
        try:
            if journal is None:
                journal = self._journal = Journal.create(self.directory, self.kind, self._seq)
                self._seq = journal.seq + 1
            journal.write(batch)
        except Exception as exc:  # disk full, permissions, ...: count, report once, retry next time
            self._counts["dropped"] += batch.num_rows
            if journal is not None:
                journal.abandon()
                self._journal = None
                self._sealing.append(journal)
            self._fail(f"cannot write {journal.path if journal else self.directory}", exc)
            return False
        self._counts["written"] += batch.num_rows
        self._counts["batches"] += 1
        return True

    def _rotate(self, final: bool = False) -> None:
        journal = self._journal
        if journal is not None and (
            final
            or journal.good_bytes >= self.rotate_bytes
            or time.monotonic() - journal.opened >= self.rotate_seconds
        ):
            self._journal = None
            self._sealing.append(journal)

    def _seal_rotated(self) -> bool:
        ok = True
        for journal in list(self._sealing):
            try:
                content = journal.seal()
            except FileNotFoundError:  # gone: nothing left to convert
                journal.release()
                content = None
            except Exception as exc:
                self._fail(f"cannot convert {journal.path} to Parquet", exc)
                ok = False
                continue
            self._sealing.remove(journal)
            self._counts["files"] += content is not None and content.table is not None
        return ok

    def _fail(self, what: str, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.error(
                "%s: %s (%s); rows that cannot be written are dropped and counted "
                "(stats()['dropped']) until the disk works again; retrying every %g s",
                self.kind,
                what,
                one_line(exc),
                self.flush_interval,
            )


def segment_paths(directory: str | os.PathLike, kind: str, include_open: bool = False) -> list[Path]:
    """The log's Parquet segments (and its journals, with ``include_open``) in name (= time) order."""
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"{root}: no such log directory")
    suffixes = (SEGMENT, JOURNAL) if include_open else (SEGMENT,)
    paths = sorted(p for s in suffixes for p in root.glob(f"{kind}-*{s}"))
    if not paths:
        raise DataError(f"{root}: no {kind} log segments ({kind}-*{SEGMENT})")
    return paths


def read_segment(path: Path, schema: pa.Schema | None = None) -> pa.Table:
    """One segment (a journal: its complete batches), cast to ``schema`` when given."""
    try:
        table = read_journal(path).table if path.suffix == JOURNAL else pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{path}: not a readable log segment ({one_line(exc)})") from None
    if table is None:
        return schema.empty_table() if schema is not None else pa.table({})
    return table if schema is None else conform(table, schema, path)


def conform(table: pa.Table, schema: pa.Schema, path: Path) -> pa.Table:
    """``table``'s columns of ``schema``, cast; a missing column or a value that does not cast is named."""
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            raise DataError(f"{path}: no column {field.name!r} (it has {', '.join(table.column_names)})")
        column = table.column(field.name)
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            example = next((v for v in column.to_pylist() if not _casts(v, field.type)), None)
            raise DataError(
                f"{path}: column {field.name!r} holds {example!r}, not a {field.type} value"
            ) from None
    return pa.Table.from_arrays(columns, schema=schema)


def _casts(value: Any, type_: pa.DataType) -> bool:
    try:
        pa.array([value]).cast(type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False
    return True


def read_log(
    directory: str | os.PathLike, kind: str, *, schema: pa.Schema | None = None, include_open: bool = False
) -> pa.Table:
    """Every segment of the ``kind`` log in ``directory`` as one table sorted by ``time``."""
    tables = [read_segment(p, schema) for p in segment_paths(directory, kind, include_open)]
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.sort_by("time") if "time" in table.column_names else table
