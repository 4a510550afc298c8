"""The journey task: fit, validate (the next-event decision rule), test every head, score the baselines on
the same prefixes, log metrics, plots and the comparison table to MLflow, add ``journey.onnx`` to the bundle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from shopformer.data.base_datamodule import BaseDataModule
from shopformer.data.journey.datamodule import JourneyDataModule
from shopformer.errors import ConfigError
from shopformer.models.journey.baselines import BASELINES, JourneyBaseline, PrefixLabels, SessionEvents
from shopformer.models.journey.classification_metrics import (
    JourneyPredictions,
    journey_metrics,
    lead_over,
    tune_gamma,
)
from shopformer.models.journey.loss import JourneyLoss
from shopformer.train.base_module import TrainingModule
from shopformer.train.journey.export import journey_exporter
from shopformer.train.journey.plots import journey_plots
from shopformer.train.task import BundleExport, Task, lightning_module

# The metrics of the comparison table (model and baselines), in this order.
TABLE_METRICS = (
    "conversion_roc_auc",
    "conversion_pr_auc",
    "conversion_log_loss",
    "conversion_ece",
    "next_event_macro_f1",
    "next_event_accuracy",
    "next_event_log_loss",
    "abandonment_roc_auc",
    "abandonment_pr_auc",
    "abandonment_ece",
)


class JourneyTask(Task):
    """Journey models (``conf/task/journey.yaml``): the multi-task loss with ``weights`` per head;
    validation picks the next-event decision rule, then the test scores every head and the
    ``baselines`` on the same prefixes, with ``bootstrap_resamples`` paired resamples for the leads."""

    name = "journey"

    def __init__(
        self,
        weights: dict[str, float] | None = None,
        baselines: Sequence[str] | None = None,
        bootstrap_resamples: int = 1000,
        sweep_metric: str | None = "conversion_roc_auc",
    ) -> None:
        super().__init__(sweep_metric)
        self.weights = dict(weights or {})
        self.baselines = list(baselines or BASELINES)
        unknown = sorted(set(self.baselines) - set(BASELINES))
        if unknown:
            raise ConfigError(
                f"task.baselines: unknown journey baseline(s) {unknown}; choose from {sorted(BASELINES)}"
            )
        self.bootstrap_resamples = int(bootstrap_resamples)

    def check(self, cfg: DictConfig) -> None:
        if not cfg.features.event_types:
            raise ConfigError("the journey model reads event types: set features.event_types=true")

    def prepare(self, cfg: DictConfig, model: nn.Module, dm: BaseDataModule) -> bool:
        check_datamodule(dm)
        model.set_known_items(dm.train_item_counts())
        if model.categories is not None:
            model.set_item_categories(dm.item_categories(model.categories.num_embeddings))
        if model.statistics is not None:
            model.set_item_statistics(dm.category_statistics())
        return True

    def build_module(
        self, cfg: DictConfig, model: nn.Module, dm: BaseDataModule, trainable: bool
    ) -> TrainingModule:
        item_loss = instantiate(cfg.loss) if self.weights.get("next_item", 0) > 0 else None
        loss = JourneyLoss(**self.weights, item_loss=item_loss)
        return lightning_module(cfg, model, loss, prior=dm.class_prior())

    def evaluate(
        self, trainer: L.Trainer, module: TrainingModule, dm: BaseDataModule, ckpt: str | None
    ) -> dict[str, float]:
        # Validation of the chosen weights sets the next-event decision rule that the test then uses.
        trainer.validate(module, datamodule=dm, ckpt_path=ckpt, verbose=False, weights_only=True)
        return super().evaluate(trainer, module, dm, ckpt)

    def report(
        self, module: TrainingModule, dm: BaseDataModule, test: dict[str, float], run_dir: Path
    ) -> dict[str, Any]:
        if "test" not in module.last_predictions:  # test_after_fit=false
            return {"test": {}, "valid": rounded(module.last_metrics.get("val", {}))}
        model_predictions, labels = module.last_predictions["test"]
        predictions = {"model": model_predictions}
        baselines = {}
        for name in self.baselines:
            predictions[name], baselines[name] = score_baseline(name, dm, labels)
        lead = leads(dm, predictions, labels, test, baselines, self.bootstrap_resamples)
        plots = journey_plots(predictions, labels, run_dir / "plots")
        return {
            "test": rounded(test),
            "valid": rounded(module.last_metrics.get("val", {})),
            "baselines": {name: rounded(values) for name, values in baselines.items()},
            "lead": lead,
            "examples": {part: ex.counts() for part, ex in dm.examples.items()},
            "plots": [str(p) for p in plots],
        }

    def log_to_mlflow(self, logger: Any, dm: BaseDataModule, summary: dict[str, Any]) -> None:
        if "baselines" in summary:
            log_journey(logger, dm, summary, [Path(p) for p in summary["plots"]])

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
        """Every head on ``split`` (validation first: it picks the next-event decision rule)."""
        check_datamodule(dm)  # the model's item tables came with its weights
        module = self.build_module(cfg, model, dm, trainable=False)
        test = self.evaluate(trainer, module, dm, None)
        return {"heads": rounded(test if split == "test" else module.last_metrics["val"])}

    def bundle_metrics(self, test: dict[str, float]) -> dict[str, float]:
        return {
            f"test/{k}": v
            for k, v in test.items()
            if math.isfinite(v) and not k.endswith(("_n", "_positives"))
        }

    def bundle_exports(
        self, model: nn.Module, dm: BaseDataModule, histories: dict[str, np.ndarray], opset: int | None
    ) -> list[BundleExport]:
        return [journey_exporter(model, histories, dm.data.event_vocab, dm.max_len, opset, dm)]


def check_datamodule(dm: BaseDataModule) -> None:
    """Refuse a datamodule that serves no journey labels."""
    if not isinstance(dm, JourneyDataModule):
        raise ConfigError(
            "the journey task needs the journey datamodule (datamodule._target_="
            "shopformer.data.journey.datamodule.JourneyDataModule); see conf/experiment/journey_*.yaml"
        )


def score_baseline(
    name: str, dm: JourneyDataModule, test_labels: dict[str, np.ndarray]
) -> tuple[JourneyPredictions, dict[str, float]]:
    """Fit baseline ``name`` on the training prefixes and score the test prefixes the model was scored on
    (the next-event decision rule chosen on the validation prefixes, as for the model)."""
    valid, test = dm.examples["valid"], dm.examples["test"]
    for head, values in test_labels.items():  # the model's evaluation order is the examples' order
        if not np.array_equal(values, getattr(test, head)):
            raise RuntimeError(f"baseline {name}: test labels of {head} differ from the model's")
    fitted, events = fit_baseline(name, dm)
    prior = dm.class_prior()
    gamma = tune_gamma(fitted.predict(events, valid.positions).next_event, valid.next_event, prior)
    predictions = fitted.predict(events, test.positions)
    return predictions, journey_metrics(predictions, **test_labels, prior=prior, gamma=gamma)


def fit_baseline(name: str, dm: JourneyDataModule) -> tuple[JourneyBaseline, SessionEvents]:
    """Baseline ``name`` fitted on the training prefixes of ``dm``, and the events it predicts from."""
    if name not in BASELINES:
        raise ConfigError(f"unknown journey baseline {name!r}; choose from {sorted(BASELINES)}")
    events = SessionEvents(
        dm.data.event, dm.data.ts, dm.labels.run_start, dm.labels.open_cart, dm.n_event_types
    )
    train = dm.examples["train"]
    labels = PrefixLabels(train.positions, train.next_event, train.conversion, train.abandonment)
    return BASELINES[name]().fit(events, labels), events


def leads(
    dm: JourneyDataModule,
    predictions: dict[str, JourneyPredictions],
    labels: dict[str, np.ndarray],
    test: dict[str, float],
    baselines: dict[str, dict[str, float]],
    resamples: int,
) -> dict[str, dict[str, dict[str, float]]]:
    """The model's lead over each baseline on conversion ROC-AUC and next-event macro-F1, with a paired
    bootstrap over test sessions (``{baseline: {metric: {delta, sd, low, high, resamples}}}``)."""
    if resamples <= 0:
        return {}
    sessions = dm.labels.run_start[dm.examples["test"].positions]
    prior = dm.class_prior()
    gamma = test.get("next_event_decision_gamma", 0.0)
    out = {}
    for name, values in baselines.items():
        gammas = (gamma, values.get("next_event_decision_gamma", 0.0))
        differences = lead_over(
            predictions["model"], predictions[name], labels, sessions, prior, gammas, resamples
        )
        out[name] = {metric: rounded(d.as_dict()) for metric, d in differences.items()}
    return out


def comparison_table(summary: dict[str, Any], metrics=TABLE_METRICS) -> str:
    """The model and its baselines on the test prefixes, as a Markdown table."""
    rows = {"model": summary["test"], **summary["baselines"]}
    head = "| | " + " | ".join(metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 1)]
    for name, values in rows.items():
        cells = [_cell(values.get(m)) for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if summary.get("lead"):
        lines += ["", "Model minus baseline (test; paired bootstrap over sessions, 95 % interval):", ""]
        lines += ["| baseline | metric | delta | sd | 95 % interval |", "|---|---|---|---|---|"]
        for name, metrics_lead in summary["lead"].items():
            for metric, d in metrics_lead.items():
                interval = f"[{_cell(d['low'])}, {_cell(d['high'])}]"
                lines.append(f"| {name} | {metric} | {_cell(d['delta'])} | {_cell(d['sd'])} | {interval} |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def rounded(values: dict[str, float]) -> dict[str, Any]:
    """JSON-safe metrics: counts as int, NaN (undefined, e.g. one class only) as None."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key.endswith(("_n", "_positives")) or key == "resamples":
            out[key] = int(value)
        else:
            out[key] = None if not math.isfinite(value) else round(float(value), 6)
    return out


def log_journey(logger, dm: JourneyDataModule, summary: dict[str, Any], plots: list[Path]) -> None:
    from mlflow.entities import Metric

    client, run_id = logger.experiment, logger.run_id
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"baseline/{name}/test/{key}", float(value), now, 0)
        for name, values in summary["baselines"].items()
        for key, value in values.items()
        if value is not None
    ]
    metrics += [
        Metric(f"lead/{name}/test/{metric}/{key}", float(d[key]), now, 0)
        for name, leads_of in summary.get("lead", {}).items()
        for metric, d in leads_of.items()
        for key in ("delta", "low", "high")
        if d[key] is not None
    ]
    client.log_batch(run_id, metrics=metrics)
    client.log_dict(run_id, {**dm.facts, "examples": summary["examples"]}, "journey_data.json")
    client.log_dict(run_id, {"model": summary["test"], **summary["baselines"]}, "journey_table.json")
    client.log_text(run_id, comparison_table(summary), "journey_table.md")
    for path in plots:
        client.log_artifact(run_id, str(path), "plots")
