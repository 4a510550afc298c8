"""A one-line-per-epoch summary, readable in logs where a progress bar is not."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging


class EpochSummary(L.Callback):
    """Prints epoch, seconds (training / with validation), training loss and validation metrics."""

    def __init__(self, metrics: tuple[str, ...] = ("ndcg_10", "hr_10")) -> None:
        self.metrics = metrics
        self._started = time.perf_counter()
        self._train_seconds: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started, self._train_seconds = time.perf_counter(), None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation runs inside the training epoch, before on_train_epoch_end.
        if not trainer.sanity_checking:
            self._train_seconds = time.perf_counter() - self._started

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        logged = trainer.callback_metrics
        total = time.perf_counter() - self._started
        parts = [f"epoch {trainer.current_epoch}"]
        train = self._train_seconds if self._train_seconds is not None else total
        parts.append(f"train {train:.1f}s, total {total:.1f}s")
        if "train/loss" in logged:
            parts.append(f"loss {float(logged['train/loss']):.4f}")
        parts += [f"val/{m} {float(logged[f'val/{m}']):.4f}" for m in self.metrics if f"val/{m}" in logged]
        print(" | ".join(parts), flush=True)


def detach_weight_averaging(trainer: L.Trainer) -> None:
    """Remove EMA / SWA callbacks once fitting is over, so validate/test score the averaged weights.

    The best checkpoint's ``state_dict`` holds the averaged weights (what validation selected it by,
    and what export and ``shopformer-eval`` load); with the callback still attached, Lightning reloads
    the raw weights (``current_model_state``) into the module for ``trainer.test``.
    """
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, WeightAveraging)]
