"""``shopformer-train`` for journey models: fit, test every head, score the baselines on the same prefixes,
log metrics, plots and the comparison table to MLflow, export the bundle with ``journey.onnx``.

:func:`shopformer.train.train.run` hands a config over here when its model's objective is ``journey``.
"""

from __future__ import annotations

import inspect
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from shopformer.data.journey_datamodule import JourneyDataModule
from shopformer.data.schema import DataError
from shopformer.models.journey_baselines import BASELINES, JourneyBaseline, PrefixLabels, SessionEvents
from shopformer.models.journey_loss import JourneyLoss
from shopformer.models.journey_metrics import JourneyPredictions, journey_metrics, lead_over, tune_gamma
from shopformer.train.callbacks import detach_weight_averaging
from shopformer.train.config import build_datamodule, build_model
from shopformer.train.export import export_and_publish
from shopformer.train.journey_module import JourneyModule
from shopformer.train.journey_plots import journey_plots
from shopformer.train.train import _best_checkpoint, _finish_mlflow_run, _flat

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


def run_journey(cfg: DictConfig, commit: str) -> dict[str, Any] | None:
    """Train and test the journey model of ``cfg``; the summary for the final JSON line (None off rank 0)."""
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if not cfg.features.event_types:
        raise DataError("the journey model reads event types: set features.event_types=true")
    OmegaConf.update(cfg, "datamodule.gap_buckets", bool(cfg.features.gap_buckets), force_add=True)
    dm = build_datamodule(cfg)
    if not isinstance(dm, JourneyDataModule):
        raise DataError(
            "the journey model needs the journey datamodule (datamodule._target_="
            "shopformer.data.journey_datamodule.JourneyDataModule); see conf/experiment/journey_*.yaml"
        )
    dm.setup()
    model = build_model(cfg, dm)
    model.set_known_items(dm.train_item_counts())
    if model.categories is not None:
        model.set_item_categories(dm.item_categories(model.categories.num_embeddings))
    if model.statistics is not None:
        model.set_item_statistics(dm.category_statistics())
    journey = cfg.get("journey") or {}
    weights = dict(journey.get("weights") or {})
    item_loss = instantiate(cfg.loss) if weights.get("next_item", 0) > 0 else None
    module = JourneyModule(
        model, JourneyLoss(**weights, item_loss=item_loss), dm.class_prior(), **_optim(cfg)
    )
    module.shopformer_config = OmegaConf.to_container(cfg, resolve=True)
    module.shopformer_git_commit = commit

    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    if not logger:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    if logger:
        logger.log_hyperparams(_flat(module.shopformer_config))
    trainer.fit(module, datamodule=dm)
    detach_weight_averaging(trainer)
    ckpt = _best_checkpoint(trainer)
    # Validation of the chosen weights sets the next-event decision rule that the test then uses.
    trainer.validate(module, datamodule=dm, ckpt_path=ckpt, verbose=False)
    trainer.test(module, datamodule=dm, ckpt_path=ckpt, verbose=False)
    if not trainer.is_global_zero:
        return None
    if not ckpt:
        ckpt = f"{trainer.default_root_dir}/checkpoints/last.ckpt"
        trainer.save_checkpoint(ckpt)
    model_predictions, labels = module.last_predictions["test"]
    predictions = {"model": model_predictions}
    baselines = {}
    for name in journey.get("baselines") or list(BASELINES):
        predictions[name], baselines[name] = score_baseline(name, dm, labels)
    test = module.last_metrics["test"]
    lead = leads(dm, predictions, labels, test, baselines, int(journey.get("bootstrap_resamples", 1000)))
    run_dir = Path(trainer.default_root_dir)
    plots = journey_plots(predictions, labels, run_dir / "plots")
    summary = {
        "run_id": getattr(logger, "run_id", None) if logger else None,
        "test": _rounded(test),
        "valid": _rounded(module.last_metrics.get("val", {})),
        "baselines": {name: _rounded(values) for name, values in baselines.items()},
        "lead": lead,
        "examples": {part: ex.counts() for part, ex in dm.examples.items()},
        "checkpoint": ckpt,
        "epochs": trainer.current_epoch,
        "dataset": {"name": dm.data.meta["name"], "hash": dm.data.meta["config_hash"]},
        "plots": [str(p) for p in plots],
    }
    if logger:
        _finish_mlflow_run(logger, cfg, dm, ckpt, commit)
        _log_journey(logger, dm, summary, plots)
    if cfg.get("export", True):
        summary.update(_export(cfg, dm, ckpt, test, logger, commit, run_dir))
    return summary


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
        raise DataError(f"unknown journey baseline {name!r}; choose from {sorted(BASELINES)}")
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
        out[name] = {metric: _rounded(d.as_dict()) for metric, d in differences.items()}
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


def _optim(cfg: DictConfig) -> dict[str, Any]:
    """The ``module`` options JourneyModule takes (the ranking options of the recommenders are skipped)."""
    accepted = set(inspect.signature(JourneyModule).parameters)
    options = OmegaConf.to_container(cfg.module, resolve=True)
    return {k: v for k, v in options.items() if k in accepted}


def _rounded(values: dict[str, float]) -> dict[str, Any]:
    """JSON-safe metrics: counts as int, NaN (undefined, e.g. one class only) as None."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key.endswith(("_n", "_positives")) or key == "resamples":
            out[key] = int(value)
        else:
            out[key] = None if not math.isfinite(value) else round(float(value), 6)
    return out


def _log_journey(logger, dm: JourneyDataModule, summary: dict[str, Any], plots: list[Path]) -> None:
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


def _export(
    cfg: DictConfig, dm, ckpt: str, test: dict[str, float], logger, commit: str, run_dir: Path
) -> dict[str, Any]:
    """The bundle (encoder + ``journey.onnx``) of the checkpoint; logged and registered in MLflow."""
    metrics = {
        f"test/{k}": v for k, v in test.items() if math.isfinite(v) and not k.endswith(("_n", "_positives"))
    }
    return export_and_publish(cfg, dm, ckpt, run_dir, logger, commit, metrics)
