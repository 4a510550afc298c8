"""The task contract: what differs between next-item recommendation and journey models.

:func:`shopformer.train.train.run` is the one pipeline (data -> model -> LightningModule -> fit ->
test -> report -> export -> register); it asks the task object of ``cfg.task`` (``conf/task/``) at
each step where tasks differ. A new task is a subclass in a folder of its own (``train/<task>/``)
plus one ``conf/task/<task>.yaml``; every hook has a default that suits a plain next-item model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from shopformer.data.base_datamodule import BaseDataModule
from shopformer.train.base_module import TrainingModule
from shopformer.train.config import check_options

# Writes optional files into the bundle directory being staged; returns their manifest entries.
BundleExport = Callable[[Path], dict[str, Any]]


class Task:
    """Default hooks; ``sweep_metric``: the test metric returned to Hydra sweeps (``hparams_search``)."""

    name = "task"

    def __init__(self, sweep_metric: str | None = None) -> None:
        self.sweep_metric = sweep_metric

    def check(self, cfg: DictConfig) -> None:
        """Refuse a config this task cannot run, before any data is built (raise ConfigError)."""

    def prepare(self, cfg: DictConfig, model: nn.Module, dm: BaseDataModule) -> bool:
        """Give the model what it needs from the set-up data; False when there is nothing to train."""
        return True

    def build_module(
        self, cfg: DictConfig, model: nn.Module, dm: BaseDataModule, trainable: bool
    ) -> TrainingModule:
        """The LightningModule of ``cfg.lit_module`` around ``model``."""
        raise NotImplementedError

    def evaluate(
        self, trainer: L.Trainer, module: TrainingModule, dm: BaseDataModule, ckpt: str | None
    ) -> dict[str, float]:
        """Test the checkpoint; its test metrics."""
        trainer.test(module, datamodule=dm, ckpt_path=ckpt, verbose=False, weights_only=True)
        return module.last_metrics.get("test", {})

    def report(
        self, module: TrainingModule, dm: BaseDataModule, test: dict[str, float], run_dir: Path
    ) -> dict[str, Any]:
        """The task's entries of the run summary (the final JSON line): at least ``test``."""
        return {"test": test}

    def log_to_mlflow(self, logger: Any, dm: BaseDataModule, summary: dict[str, Any]) -> None:
        """Anything the task adds to the MLflow run beyond the pipeline's tags and artifacts."""

    def bundle_metrics(self, test: dict[str, float]) -> dict[str, float]:
        """The test metrics written into the bundle's manifest."""
        return {f"test/{k}": v for k, v in test.items() if np.isfinite(v)}

    def bundle_exports(
        self, model: nn.Module, dm: BaseDataModule, histories: dict[str, np.ndarray], opset: int | None
    ) -> list[BundleExport]:
        """Extra files of the bundle (e.g. ``journey.onnx``)."""
        return []

    def evaluate_checkpoint(
        self,
        cfg: DictConfig,
        model: nn.Module,
        dm: BaseDataModule,
        trainer: L.Trainer,
        split: str,
        protocols: dict[str, bool],
        ranks_dir: Path | None = None,
    ) -> dict[str, Any]:
        """``shopformer-eval``: the metrics of a restored ``model`` on ``split`` (``test`` or ``valid``);
        ``protocols``: ranking protocol name -> whether items already seen are excluded; ``ranks_dir``:
        where a ranking task writes each protocol's per-query ranks (``<protocol>.parquet``)."""
        raise NotImplementedError

    def sweep_value(self, summary: dict[str, Any]) -> float | None:
        """What a Hydra sweep optimises (None: nothing): ``sweep_metric`` on the validation split, as the
        best checkpoint scored it, so that a sweep never chooses on the test split. A run that kept no
        validation score of it (a fitted baseline, a checkpoint monitoring another metric) falls back
        to the test value."""
        if not self.sweep_metric:
            return None
        valid = summary.get("valid", {})
        validation = valid.get(f"val/{self.sweep_metric.replace('@', '_')}", valid.get(self.sweep_metric))
        return validation if validation is not None else summary.get("test", {}).get(self.sweep_metric)


def lightning_module(
    cfg: DictConfig, model: nn.Module, loss: nn.Module | None, **extra: Any
) -> TrainingModule:
    """``cfg.lit_module`` (a partial) called with model, loss, ``cfg.optimizer`` and ``cfg.schedule``."""
    check_options(cfg.lit_module, "lit_module")
    make = instantiate(cfg.lit_module, _convert_="all")
    optimizer = instantiate(cfg.optimizer, _convert_="all")
    schedule = instantiate(cfg.schedule) if cfg.get("schedule") else None
    return make(model=model, loss=loss, optimizer=optimizer, schedule=schedule, **extra)
