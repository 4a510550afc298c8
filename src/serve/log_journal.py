"""Journal files of the serving logs: locked Arrow IPC streams, their recovery, their sealing into Parquet.

A journal ``<kind>-<UTC start>-<seq>.arrows`` is an Arrow IPC stream its writer flushes and fsyncs after
every batch, so after a crash its complete batches are on disk and at most a torn last batch is lost.
While a process writes a journal it holds the file's ``flock``: recovery (:func:`recover`) takes only
journals whose process has died, so several server processes may share one log directory. Sealing
writes ``<same name>.parquet`` (temp file, then ``os.replace``) and deletes the journal only after.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from shopformer.errors import one_line

try:
    import fcntl
except ImportError:  # not on Windows: one process per log directory there
    fcntl = None

log = logging.getLogger("shopformer.serve")
JOURNAL, SEGMENT = ".arrows", ".parquet"


def sync_file(file: IO[bytes]) -> None:
    """Push the file's buffered bytes to the disk (the durability point of every batch)."""
    file.flush()
    os.fsync(file.fileno())


def lock(file: IO[bytes]) -> bool:
    """Take the file's exclusive lock without waiting; False when another open file holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def still_at(file: IO[bytes], path: Path) -> bool:
    """Whether ``path`` still names the open ``file`` (not deleted or replaced meanwhile)."""
    try:
        return os.stat(path).st_ino == os.fstat(file.fileno()).st_ino
    except FileNotFoundError:
        return False


def iso(t: float | None) -> str:
    return "?" if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class JournalContent:
    """The complete batches of a journal, and how many bytes after them were unreadable."""

    table: pa.Table | None  # None when not even the schema header was complete
    good_bytes: int
    torn_bytes: int


def read_journal(path: Path, limit: int | None = None) -> JournalContent:
    """Read a journal's batches up to ``limit`` bytes, stopping at the first incomplete one."""
    with pa.memory_map(str(path)) as mapped:
        size = mapped.size() if limit is None else min(limit, mapped.size())
        source = pa.BufferReader(mapped.read_buffer(size))
        try:
            reader = pa.ipc.open_stream(source)
        except (pa.ArrowInvalid, OSError):
            return JournalContent(None, 0, size)
        batches, good = [], source.tell()
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):  # a batch torn by a crash
                break
            good = source.tell()
        table = pa.Table.from_batches(batches, schema=reader.schema)
    return JournalContent(table, good, size - good)


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` atomically: readers see the old file, no file or the whole new one."""
    temp = path.with_name(path.name + ".tmp")
    pq.write_table(table, temp, compression="zstd")
    os.replace(temp, path)


def seal(path: Path, limit: int | None = None) -> JournalContent:
    """Convert a journal into ``<name>.parquet`` (when it holds rows), then delete the journal."""
    content = read_journal(path, limit)
    if content.table is not None and content.table.num_rows:
        write_parquet(content.table, path.with_suffix(SEGMENT))
    path.unlink()
    return content


@dataclass(frozen=True)
class Recovery:
    """What came back from one journal a crashed process left behind."""

    journal: str
    rows: int
    last_time: float | None
    torn_bytes: int
    message: str


def recover_journal(path: Path, kind: str, flush_interval: float) -> Recovery | None:
    """Seal a dead process's journal; None when a live process holds it (or it has gone meanwhile)."""
    with open(path, "rb") as file:
        if not lock(file) or not still_at(file, path):
            return None
        if path.with_suffix(SEGMENT).exists():  # converted before the crash, not yet deleted
            path.unlink()
            return None
        content = seal(path)
    rows = 0 if content.table is None else content.table.num_rows
    times = content.table.column("time") if rows and "time" in content.table.column_names else None
    last = None if times is None else times.to_numpy().max().item()
    message = (
        f"{kind}: recovered {rows:,} rows from an unfinished log segment {path.name} (last row at "
        f"{iso(last)}); a crash loses at most the rows of the last {flush_interval:g} s flush interval"
    )
    if content.torn_bytes:
        message += f"; dropped a torn last batch of {content.torn_bytes:,} bytes"
    return Recovery(path.name, rows, last, content.torn_bytes, message)


def recover(directory: Path, kind: str, flush_interval: float) -> list[Recovery]:
    """Recover every journal of ``kind`` in ``directory`` that no live process holds; log each."""
    found = []
    for path in sorted(directory.glob(f"{kind}-*{JOURNAL}")):
        try:
            recovery = recover_journal(path, kind, flush_interval)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.error("%s: cannot recover %s (%s); it stays for the next start", kind, path, one_line(exc))
            continue
        if recovery is not None:
            log.warning("%s", recovery.message)
            found.append(recovery)
    return found


class Journal:
    """One open journal file: locked while this process writes it, sealed into Parquet when done."""

    def __init__(self, path: Path, file: IO[bytes]) -> None:
        self.path = path
        self.file = file
        self.opened = time.monotonic()
        self.writer: pa.ipc.RecordBatchStreamWriter | None = None
        self.good_bytes = 0  # the end of the last batch that reached the disk

    @classmethod
    def create(cls, directory: Path, kind: str, seq: int) -> Journal:
        """A new, locked journal named after the current UTC time and the first free sequence number."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for n in range(seq, seq + 10_000):
            path = directory / f"{kind}-{stamp}-{n:04d}{JOURNAL}"
            if path.with_suffix(SEGMENT).exists():
                continue
            try:
                file = open(path, "xb")  # noqa: SIM115 - the journal owns it until sealed
            except FileExistsError:
                continue
            if lock(file) and still_at(file, path):
                return cls(path, file)
            file.close()  # another process's recovery took it between create and lock
        raise OSError(f"no free journal name for {kind} in {directory}")

    @property
    def seq(self) -> int:
        return int(self.path.stem.rsplit("-", 1)[1])

    def write(self, batch: pa.RecordBatch) -> None:
        if self.writer is None:
            self.writer = pa.ipc.new_stream(self.file, batch.schema)
        self.writer.write_batch(batch)
        sync_file(self.file)
        self.good_bytes = self.file.tell()

    def abandon(self) -> None:
        """Stop writing after a failure: cut whatever a failed write left after the last good batch."""
        self.writer = None
        with contextlib.suppress(OSError, ValueError):  # sealing reads only up to good_bytes anyway
            os.ftruncate(self.file.fileno(), self.good_bytes)

    def seal(self) -> JournalContent | None:
        """Finish the stream and convert it to Parquet; raises OSError (and stays open) when that fails."""
        if self.writer is not None:
            with contextlib.suppress(OSError):  # the end-of-stream marker is optional
                self.writer.close()
            self.writer = None
        content = seal(self.path, self.good_bytes) if self.good_bytes else None
        if content is None:
            self.path.unlink(missing_ok=True)
        self.release()
        return content

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
