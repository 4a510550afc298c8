"""``shopformer-train``: fit, evaluate by full ranking, log to MLflow, print one JSON line."""

from __future__ import annotations

import json
import sys
from typing import Any

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from shopformer.data.schema import DataError
from shopformer.data.split import TRAIN
from shopformer.models.baselines import FittedBaseline
from shopformer.train.config import CONF_DIR, build_datamodule
from shopformer.train.module import RecommenderModule
from shopformer.train.tracking import git_commit


def build_model(cfg: DictConfig, dm) -> torch.nn.Module:
    """The model of ``cfg.model``, sized by the datamodule (items, max length, channels)."""
    return instantiate(
        cfg.model,
        n_items=dm.n_items,
        max_len=cfg.datamodule.max_len,
        n_event_types=dm.n_event_types if cfg.features.event_types else 0,
        n_gap_buckets=dm.n_gap_buckets if cfg.datamodule.gap_buckets else 0,
    )


def model_objective(cfg: DictConfig) -> str:
    return getattr(get_class(cfg.model._target_), "objective", "next_item")


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Train and test as ``cfg`` says; returns the summary for the final JSON line (None off rank 0)."""
    commit = git_commit()  # now: the tree may change while a long run trains
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    OmegaConf.update(cfg, "datamodule.objective", model_objective(cfg), force_add=True)
    OmegaConf.update(cfg, "datamodule.gap_buckets", bool(cfg.features.gap_buckets), force_add=True)
    if cfg.module.get("exclude_seen"):  # the ranking needs each user's whole history
        OmegaConf.update(cfg, "datamodule.with_seen", True, force_add=True)
    dm = build_datamodule(cfg)
    dm.setup()  # builds the processed dataset, or loads it from the cache
    model = build_model(cfg, dm)
    trainable = not isinstance(model, FittedBaseline)
    if not trainable:
        ds = dm.data
        model.fit(ds.item[ds.role == TRAIN], ds.seq[ds.role == TRAIN])
    if cfg.get("compile") and trainable:
        model = torch.compile(model)
    loss = instantiate(cfg.loss) if trainable else None
    module = RecommenderModule(model, loss, **OmegaConf.to_container(cfg.module, resolve=True))
    module.shopformer_config = OmegaConf.to_container(cfg, resolve=True)

    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()] if trainable else []
    if not logger:  # nothing to monitor the learning rate into
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    if logger:
        logger.log_hyperparams(_flat(module.shopformer_config))
    if trainable:
        trainer.fit(module, datamodule=dm)
    ckpt = _best_checkpoint(trainer) if trainable else None
    test_metrics = {}
    if cfg.get("test_after_fit", True):
        trainer.test(module, datamodule=dm, ckpt_path=ckpt, verbose=False)
        test_metrics = module.last_metrics.get("test", {})
    if not trainer.is_global_zero:
        return None  # rank 0 reports for the whole DDP job
    if not ckpt:
        ckpt = f"{trainer.default_root_dir}/checkpoints/last.ckpt"
        trainer.save_checkpoint(ckpt)
    summary = {
        "run_id": getattr(logger, "run_id", None) if logger else None,
        "test": {k: (v if k == "n" else round(v, 6)) for k, v in test_metrics.items()},
        "checkpoint": ckpt,
        "epochs": trainer.current_epoch,
        "dataset": {"name": dm.data.meta["name"], "hash": dm.data.meta["config_hash"]},
    }
    if logger:
        _finish_mlflow_run(logger, cfg, dm, ckpt, commit)
    return summary


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    return getattr(callback, "best_model_path", None) or None


def _finish_mlflow_run(logger, cfg: DictConfig, dm, ckpt: str | None, commit: str) -> None:
    client, run_id = logger.experiment, logger.run_id
    client.set_tag(run_id, "dataset", dm.data.meta["name"])
    client.set_tag(run_id, "dataset_hash", dm.data.meta["config_hash"])
    client.set_tag(run_id, "git_commit", commit)
    client.set_tag(run_id, "model", cfg.model._target_.rsplit(".", 1)[-1])
    client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    client.log_dict(run_id, dm.data.meta["report"], "dataset_report.json")
    if ckpt:
        client.log_artifact(run_id, ckpt, "checkpoints")


def _flat(config: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        summary = run(cfg)
    except (DataError, InstantiationException) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    if summary is not None:
        print(json.dumps(summary), flush=True)
        return summary["test"].get("ndcg@10")  # the objective of hparams_search sweeps
    return None


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
