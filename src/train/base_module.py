"""What every task's LightningModule shares: optimiser and schedule from config, token channels,
the loss's item counts, and the checkpoint's run metadata."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from shopformer.train.rng_state import restore_rng_states, rng_states
from shopformer.train.schedule import LRSchedule

# Optional token channels of a batch, passed to the model by name.
CHANNELS = ("event_types", "gap_buckets")

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def default_optimizer() -> OptimizerFactory:
    """AdamW as ``conf/optimizer/adamw.yaml`` builds it, for modules made outside a config."""
    return partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.98))


class TrainingModule(L.LightningModule):
    """Holds ``model`` and ``loss``; builds the optimiser (``optimizer``: a partial taking the
    parameters, ``conf/optimizer/``) and the per-step learning-rate ``schedule`` (``conf/schedule/``).

    ``shopformer_config`` and ``shopformer_git_commit``, set by the pipeline, travel in every
    checkpoint as plain containers (it loads with ``torch.load(weights_only=True)``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module | None,
        optimizer: OptimizerFactory | None = None,
        schedule: LRSchedule | None = None,
    ) -> None:
        super().__init__()
        self.model, self.loss = model, loss
        self.optimizer_factory = optimizer or default_optimizer()
        self.schedule = schedule or LRSchedule()
        self.shopformer_config: dict[str, Any] | None = None
        self.shopformer_git_commit: str | None = None
        self.shopformer_precision: str | None = None

    def setup(self, stage: str) -> None:
        self.attach_data(getattr(self.trainer, "datamodule", None))

    def attach_data(self, datamodule) -> None:
        """Give the loss the training item counts (popularity negatives, logQ correction)."""
        if self.loss is not None and datamodule is not None and hasattr(datamodule, "train_item_counts"):
            self.loss.set_item_counts(torch.as_tensor(datamodule.train_item_counts(), dtype=torch.float32))

    @staticmethod
    def channels(batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The token channels present in ``batch`` (event types, time-gap buckets)."""
        return {name: batch[name] for name in CHANNELS if name in batch}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["shopformer_config"] = self.shopformer_config
        checkpoint["shopformer_git_commit"] = self.shopformer_git_commit
        checkpoint["shopformer_precision"] = self.shopformer_precision
        # A run resumed from this checkpoint draws the same batches, masks and dropout as one that
        # was never interrupted.
        checkpoint["shopformer_rng"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("shopformer_rng"):
            restore_rng_states(checkpoint["shopformer_rng"])
        mark_finished_epoch_completed(checkpoint)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            return None
        optimizer = self.optimizer_factory(params)
        if self.schedule.constant:
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        trainer, schedule = self.trainer, self.schedule

        def factor(_: int) -> float:
            # The trainer's global step, not the scheduler's own count: a run resumed from a
            # checkpoint saved without a scheduler (constant lr) still decays at the right step.
            return schedule.factor(trainer.global_step, total)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def mark_finished_epoch_completed(checkpoint: dict) -> None:
    """A checkpoint written at the end of an epoch (after its last batch and its validation) continues
    with the next epoch, also when the run is sized in optimiser steps.

    Lightning counts such an epoch as completed on restore only for epoch-based training
    (``FitLoop.on_run_start``); with ``max_steps`` set (our recipes) it re-entered the finished epoch
    with no batch left, ran its epoch-end hooks without validation (early stopping then failed on a
    missing ``val/*`` metric) and lost one epoch of the budget. This hook runs before the loops are
    restored from the same dictionary."""
    fit = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    epoch, batches = fit.get("epoch_progress", {}).get("current"), fit.get("epoch_loop.batch_progress", {})
    if epoch and batches.get("is_last_batch") and epoch.get("completed", 0) < epoch.get("processed", 0):
        epoch["completed"] = epoch["processed"]
        # ... and the next epoch starts from its first batch (what a new epoch's reset does).
        batches["current"] = {key: 0 for key in batches.get("current", {})}
        batches["is_last_batch"] = False
