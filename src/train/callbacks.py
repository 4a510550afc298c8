"""A one-line-per-epoch summary, readable in logs where a progress bar is not."""

from __future__ import annotations

import json
import time
from pathlib import Path

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


class TimeToTarget(L.Callback):
    """Records the wall time (seconds since fitting began) and epoch at which ``monitor`` first reaches
    ``target`` (``mode`` max: >=, min: <=); with ``stop``, training ends there. ``reached_s`` and
    ``reached_epoch`` stay None until then; with ``report``, they are written there as JSON when
    training ends (``benchmarks/gpu/check.py`` reads them)."""

    def __init__(
        self,
        monitor: str = "val/ndcg_10",
        target: float = 0.18,
        mode: str = "max",
        stop: bool = False,
        report: str | None = None,
    ):
        self.monitor, self.target, self.mode, self.stop = monitor, float(target), mode, stop
        self.report = report
        self.reached_s: float | None = None
        self.reached_epoch: int | None = None
        self.best: float | None = None
        self._started = time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The epoch's validation ran before this hook (its metrics are logged by then).
        if self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        better = max if self.mode == "max" else min
        self.best = value if self.best is None else better(self.best, value)
        hit = value >= self.target if self.mode == "max" else value <= self.target
        if hit and self.reached_s is None:
            self.reached_s, self.reached_epoch = (
                time.perf_counter() - self._started,
                trainer.current_epoch + 1,
            )
            if self.stop:
                trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.report and trainer.is_global_zero:
            facts = {"monitor": self.monitor, "target": self.target, "best": self.best}
            facts |= {"reached_s": self.reached_s, "reached_epoch": self.reached_epoch}
            Path(self.report).write_text(json.dumps(facts) + "\n")
