"""The processed dataset: encoded sequences + roles on disk (Parquet + meta.json), cached by config hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shopformer.data.features import gap_buckets
from shopformer.data.preprocess import PreprocessConfig, preprocess
from shopformer.data.sources import EventSource
from shopformer.data.split import TEST, TRAIN, VALID, LeaveOneOut, Split
from shopformer.data.vocab import PAD_TOKEN
from shopformer.errors import DataError

FORMAT_VERSION = 1
EVENTS_FILE, KEYS_FILE, VOCAB_FILE, META_FILE = (
    "events.parquet",
    "sequences.parquet",
    "vocab.parquet",
    "meta.json",
)


@dataclass
class DatasetSpec:
    """Everything that determines a processed dataset (and so its cache key)."""

    name: str
    source: EventSource
    sequence_key: str = "user"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    split: Split = field(default_factory=LeaveOneOut)

    def config_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "name": self.name,
            "source": self.source.fingerprint(),
            "sequence_key": self.sequence_key,
            "preprocess": dataclasses.asdict(self.preprocess),
            "split": {"class": type(self.split).__name__, **dataclasses.asdict(self.split)},
        }

    def config_hash(self) -> str:
        text = json.dumps(self.config_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class ProcessedDataset:
    """Flat event arrays sorted by (sequence, time); ``offsets`` delimit sequences."""

    seq: np.ndarray
    item: np.ndarray
    event: np.ndarray
    ts: np.ndarray
    session: np.ndarray
    role: np.ndarray
    sequence_keys: pd.DataFrame
    item_vocab: pd.DataFrame
    meta: dict[str, Any]

    @property
    def offsets(self) -> np.ndarray:
        counts = np.bincount(self.seq, minlength=self.n_sequences)
        return np.r_[0, np.cumsum(counts)].astype(np.int64)

    @property
    def n_sequences(self) -> int:
        return len(self.sequence_keys)

    @property
    def n_items(self) -> int:
        """Size of the item id space, padding included (ids 0..n_items-1)."""
        return len(self.item_vocab) + 1

    @property
    def event_vocab(self) -> list[str]:
        return self.meta["event_vocab"]

    @property
    def has_timestamps(self) -> bool:
        return bool(self.meta["has_timestamps"])

    def train_end(self) -> np.ndarray:
        """Per sequence, the flat index one past its last training event."""
        n_train = np.bincount(self.seq[self.role == TRAIN], minlength=self.n_sequences)
        return self.offsets[:-1] + n_train

    def target_positions(self, split: str) -> np.ndarray:
        """Flat indices of the evaluation targets of ``'valid'`` or ``'test'``."""
        role = {"valid": VALID, "test": TEST}[split]
        return np.flatnonzero(self.role == role)

    def gap_buckets(self) -> np.ndarray:
        """Time-gap bucket per event; refuses order-only data."""
        if not self.has_timestamps:
            raise DataError(
                f"dataset '{self.meta['name']}' has only an event order (no real timestamps), "
                "so time-gap buckets cannot be computed; turn gap_buckets off"
            )
        starts = np.r_[True, self.seq[1:] != self.seq[:-1]]
        return gap_buckets(self.ts, starts)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {
                "seq": self.seq,
                "item": self.item,
                "event": self.event,
                "ts": self.ts,
                "session": self.session,
                "role": self.role,
            }
        )
        pq.write_table(table, directory / EVENTS_FILE)
        self.sequence_keys.to_parquet(directory / KEYS_FILE, index=False)
        self.item_vocab.to_parquet(directory / VOCAB_FILE, index=False)
        (directory / META_FILE).write_text(json.dumps(self.meta, indent=2, default=str))

    @classmethod
    def load(cls, directory: Path) -> ProcessedDataset:
        """A cached dataset: Parquet and JSON only; a file that is neither (a pickle, say) is refused."""
        columns = _read_cache_file(directory / EVENTS_FILE, pq.read_table)
        arrays = {name: columns.column(name).to_numpy() for name in columns.column_names}
        return cls(
            **arrays,
            sequence_keys=_read_cache_file(directory / KEYS_FILE, pd.read_parquet),
            item_vocab=_read_cache_file(directory / VOCAB_FILE, pd.read_parquet),
            meta=_read_cache_file(directory / META_FILE, lambda path: json.loads(path.read_text())),
        )


def _read_cache_file(path: Path, read: Callable[[Path], Any]) -> Any:
    try:
        return read(path)
    except (OSError, ValueError, pa.ArrowException) as exc:  # JSON/Unicode errors are ValueErrors
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{path}: not a dataset cache file shopformer wrote ({first}); delete {path.parent} to rebuild it"
        ) from None


def build(spec: DatasetSpec) -> ProcessedDataset:
    """Load the source, preprocess, split: the whole pipeline without the cache."""
    started = time.perf_counter()
    table = spec.source.load()
    if spec.split.needs_timestamps and not table.has_timestamps:
        raise DataError(
            f"{table.origin}: split {type(spec.split).__name__} needs real timestamps, but this "
            "dataset has only an event order; use split=leave_one_out"
        )
    encoded = preprocess(table, spec.preprocess, spec.sequence_key)
    ev = encoded.events
    seq, ts, item = (ev[c].to_numpy() for c in ("seq", "ts", "item"))
    role, split_facts = spec.split.assign(seq, ts, item, table.has_timestamps)
    meta = {
        "name": spec.name,
        "config_hash": spec.config_hash(),
        "config": spec.config_dict(),
        "origin": table.origin,
        "has_timestamps": table.has_timestamps,
        "sequence_key": spec.sequence_key,
        "event_vocab": encoded.event_vocab,
        "split": split_facts,
        "report": encoded.report,
        "build_seconds": round(time.perf_counter() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    assert encoded.event_vocab[0] == PAD_TOKEN
    return ProcessedDataset(
        seq=seq.astype(np.int32),
        item=item.astype(np.int32),
        event=ev["event"].to_numpy(np.int8),
        ts=ts.astype(np.int64),
        session=ev["session"].to_numpy(np.int64),
        role=role.astype(np.int8),
        sequence_keys=encoded.sequence_keys,
        item_vocab=encoded.item_vocab,
        meta=meta,
    )


def cache_path(spec: DatasetSpec, cache_dir: str | os.PathLike) -> Path:
    return Path(cache_dir) / f"{spec.name}-{spec.config_hash()}"


def load_or_build(
    spec: DatasetSpec, cache_dir: str | os.PathLike | None
) -> tuple[ProcessedDataset, Path | None, bool]:
    """The processed dataset from the cache when its config hash matches, else built and saved.

    Returns (dataset, its directory or None without a cache, whether it came from the cache).
    """
    if cache_dir is None:
        return build(spec), None, False
    target = cache_path(spec, cache_dir)
    if (target / META_FILE).is_file():
        return ProcessedDataset.load(target), target, True
    dataset = build(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target, then rename: a crash never leaves a half-written cache entry.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        dataset.save(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists() and tmp != target:
            shutil.rmtree(tmp, ignore_errors=True)
    return dataset, target, False
