"""A callback that signals its own training process once, mid-epoch (for the resume tests)."""

from __future__ import annotations

import os
import signal as signal_module
from pathlib import Path

import lightning as L


class KillOnce(L.Callback):
    """``signal`` (SIGKILL, or e.g. SIGTERM) at ``batch`` of ``epoch`` unless ``marker`` exists (it is
    created first): the same command started again then runs through."""

    def __init__(self, epoch: int, batch: int, marker: str, signal: str = "SIGKILL") -> None:
        self.epoch, self.batch, self.marker = epoch, batch, Path(marker)
        self.signal = getattr(signal_module, signal)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), self.signal)
