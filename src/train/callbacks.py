"""Callbacks of every run: a one-line-per-epoch summary (readable in logs where a progress bar is not),
an EMA of the weights sized to the planned steps, time to a target metric."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor

from shopformer.errors import ConfigError


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
        if self._train_seconds is None:  # no validation in this epoch (e.g. max_steps ended it early):
            parts.append("no validation")  # the logged values are the previous epoch's
        else:
            names = [f"val/{m}" for m in self.metrics if f"val/{m}" in logged]
            parts += [f"{name} {float(logged[name]):.4f}" for name in names]
        print(" | ".join(parts), flush=True)


def detach_weight_averaging(trainer: L.Trainer) -> None:
    """Remove EMA / SWA callbacks once fitting is over, so validate/test score the averaged weights.

    The best checkpoint's ``state_dict`` holds the averaged weights (what validation selected it by,
    and what export and ``shopformer-eval`` load); with the callback still attached, Lightning reloads
    the raw weights (``current_model_state``) into the module for ``trainer.test``.
    """
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, WeightAveraging)]


def planned_decay(decay: float, planned_steps: float, window: float = 0.1) -> float:
    """``decay``, lowered so that the average spans at most ``window`` of ``planned_steps``.

    An EMA with decay ``d`` averages over about ``1 / (1 - d)`` steps: 0.99 over 100. A run of 75
    steps would otherwise end with the average mostly its first weights."""
    if not math.isfinite(planned_steps) or planned_steps <= 0:
        return decay
    return max(0.0, min(decay, 1.0 - 1.0 / (window * planned_steps)))


class PlannedEMA(WeightAveraging):
    """An exponential moving average of the weights (as Lightning's ``EMAWeightAveraging``: updated
    after every optimiser step; validation, checkpoints and test use the averaged weights) whose
    decay fits the run: at fit start ``decay`` is lowered to :func:`planned_decay` of the trainer's
    planned steps (``trainer.estimated_stepping_batches``) when the run is too short for it."""

    def __init__(self, decay: float = 0.999, window: float = 0.1, device: str | None = None) -> None:
        if not 0.0 < decay < 1.0 or not 0.0 < window <= 1.0:
            raise ConfigError(
                f"callbacks.ema: decay must be in (0, 1) and window in (0, 1], got {decay}, {window}"
            )
        self.decay, self.window, self.effective_decay = decay, window, decay
        super().__init__(device=device, avg_fn=self.update)

    @torch.no_grad()
    def update(self, averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        """One EMA step (the arithmetic of Lightning's ``get_ema_avg_fn``)."""
        return self.effective_decay * averaged + (1 - self.effective_decay) * current

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        planned = trainer.estimated_stepping_batches
        self.effective_decay = planned_decay(self.decay, planned, self.window)
        if self.effective_decay < self.decay and trainer.is_global_zero:
            print(
                f"ema: decay {self.decay} -> {self.effective_decay:.4f} ({planned} planned steps; the "
                f"average spans at most {self.window:.0%} of them)",
                flush=True,
            )


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
