"""``shopformer-train``: fit, evaluate by full ranking, log to MLflow, print one JSON line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from shopformer.data.schema import DataError
from shopformer.data.split import TRAIN
from shopformer.models.baselines import FittedBaseline
from shopformer.serve.index import IndexConfigError
from shopformer.train.callbacks import detach_weight_averaging
from shopformer.train.config import CONF_DIR, build_datamodule, build_model, model_objective
from shopformer.train.export import ExportError, check_index_spec, export_and_publish
from shopformer.train.module import RecommenderModule
from shopformer.train.tracking import git_commit


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Train and test as ``cfg`` says; returns the summary for the final JSON line (None off rank 0)."""
    commit = git_commit()  # now: the tree may change while a long run trains
    if model_objective(cfg) == "journey":
        from shopformer.train.journey import run_journey  # imports this module: loaded on demand

        return run_journey(cfg, commit)
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
    if cfg.get("export", True):  # a bad index spec fails now, not after training
        check_index_spec(cfg.index.factory, cfg.index.params, model.dim, dm.n_items)
    trainable = not isinstance(model, FittedBaseline)
    if not trainable:
        ds = dm.data
        model.fit(ds.item[ds.role == TRAIN], ds.seq[ds.role == TRAIN])
    if cfg.get("compile") and trainable:
        model = torch.compile(model)
    loss = instantiate(cfg.loss) if trainable else None
    module = RecommenderModule(model, loss, **OmegaConf.to_container(cfg.module, resolve=True))
    module.shopformer_config = OmegaConf.to_container(cfg, resolve=True)
    module.shopformer_git_commit = commit

    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()] if trainable else []
    if not logger:  # nothing to monitor the learning rate into
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    if logger:
        logger.log_hyperparams(_flat(module.shopformer_config))
    if trainable:
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("resume"))
        detach_weight_averaging(trainer)
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
    if cfg.get("export", True):
        summary.update(_export(cfg, dm, ckpt, trainer, logger, commit))
    return summary


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    return getattr(callback, "best_model_path", None) or None


def _export(cfg: DictConfig, dm, ckpt: str, trainer: L.Trainer, logger, commit: str) -> dict[str, Any]:
    """The bundle of the checkpoint's weights in ``<run dir>/bundle``; logged and registered in MLflow."""
    metrics = {
        f"test/{k.replace('@', '_')}": v
        for k, v in trainer.lightning_module.last_metrics.get("test", {}).items()
        if k != "n"
    }
    return export_and_publish(cfg, dm, ckpt, Path(trainer.default_root_dir), logger, commit, metrics)


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
    except (DataError, ExportError, IndexConfigError, InstantiationException) as exc:
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
