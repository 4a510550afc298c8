"""A one-line-per-epoch summary, readable in logs where a progress bar is not."""

from __future__ import annotations

import time

import lightning as L


class EpochSummary(L.Callback):
    """Prints epoch, seconds, training loss and the validation metrics after each validation."""

    def __init__(self, metrics: tuple[str, ...] = ("ndcg_10", "hr_10")) -> None:
        self.metrics = metrics
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()
        self._train_seconds = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation runs inside the training epoch, before on_train_epoch_end.
        self._train_seconds = time.perf_counter() - self._started

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        logged = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch}"]
        if getattr(self, "_train_seconds", None) is not None:
            parts.append(f"train {self._train_seconds:.1f}s")
        parts.append(f"total {time.perf_counter() - self._started:.1f}s")
        if "train/loss" in logged:
            parts.append(f"loss {float(logged['train/loss']):.4f}")
        parts += [f"val/{m} {float(logged[f'val/{m}']):.4f}" for m in self.metrics if f"val/{m}" in logged]
        print(" | ".join(parts), flush=True)
