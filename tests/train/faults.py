"""Faults injected into a training run from a callback (for the tracking-down tests)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import lightning as L


class BreakStore(L.Callback):
    """At the end of ``epoch``, overwrite the sqlite tracking store with bytes that are no database."""

    def __init__(self, path: str, epoch: int = 0) -> None:
        self.path, self.epoch = Path(path), epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            self.path.write_bytes(b"not a database " * 512)


class LockStore(L.Callback):
    """At the end of ``epoch``, take an exclusive lock on the sqlite store and keep it (another
    process writing to it, as a backup job would)."""

    def __init__(self, path: str, epoch: int = 0) -> None:
        self.path, self.epoch = Path(path), epoch
        self.connection: sqlite3.Connection | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and self.connection is None:
            self.connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.connection.execute("BEGIN EXCLUSIVE")
