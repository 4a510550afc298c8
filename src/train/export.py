"""``shopformer-export``: the bundle of a checkpoint; and, after training, the bundle of the best
checkpoint logged and registered in MLflow (every task: what a task adds comes from its task object)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from shopformer.errors import exit_on_user_error
from shopformer.models.base import SequenceRecommender
from shopformer.train.bundle_export import eval_histories, export_bundle
from shopformer.train.bundle_writer import check_target
from shopformer.train.checkpoint import best_score, checkpoint_config, load_checkpoint, restore_model
from shopformer.train.config import CONF_DIR, build_datamodule, build_task
from shopformer.train.quiet import quiet_libraries
from shopformer.train.resilient_logger import guarded
from shopformer.train.tracking import publish_bundle


def default_name(cfg: DictConfig) -> str:
    """The bundle / registered model name of a run: ``registry.name``, else ``shopformer-<task_name>``."""
    registry = cfg.get("registry") or {}
    return str(registry.get("name") or f"shopformer-{cfg.get('task_name') or 'model'}")


def export_and_publish(
    cfg: DictConfig, dm, ckpt: str, run_dir: Path, logger, commit: str, metrics: dict[str, float]
) -> dict[str, Any]:
    """The bundle of ``ckpt``'s weights in ``<run_dir>/bundle``; logged and registered in MLflow.

    Shared by every training path (recommenders and journey models).
    """
    run_id = getattr(logger, "run_id", None) if logger else None
    model = restore_model(load_checkpoint(ckpt), cfg, dm)
    bundle = export_run(
        model,
        cfg,
        dm,
        run_dir / "bundle",
        version=run_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        metrics=metrics,
        commit=commit,
        overwrite=True,  # a rerun in the same directory
        extra={"run_id": run_id} if run_id else None,
    )
    out: dict[str, Any] = {"bundle": str(bundle)}
    if logger:
        registry = cfg.get("registry") or {}
        out["registered_model"] = guarded(
            logger,
            "publishing the bundle",
            lambda: publish_bundle(
                logger.experiment,
                run_id,
                bundle,
                register=bool(registry.get("register", True)),
                name=default_name(cfg),
                alias=registry.get("alias"),
            ),
        )
    return out


def export_run(
    model: SequenceRecommender,
    cfg: DictConfig,
    dm,
    out: str | Path,
    *,
    version: str,
    metrics: dict[str, float] | None = None,
    index: DictConfig | dict | None = None,
    name: str | None = None,
    commit: str | None = None,
    recall_queries: int = 1000,
    opset: int | None = None,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """The bundle of a model trained with ``cfg`` on the set-up datamodule ``dm``."""
    index = OmegaConf.to_container(OmegaConf.create(index or cfg.get("index") or {}), resolve=True)
    data = dm.data
    histories = eval_histories(dm, "test", recall_queries)
    extra_exports = build_task(cfg).bundle_exports(model, dm, histories, opset)
    return export_bundle(
        model,
        data.item_vocab,
        out,
        name=name or default_name(cfg),
        version=version,
        metrics=metrics,
        config=OmegaConf.to_container(cfg, resolve=True),
        event_vocab=data.event_vocab,
        histories=histories,
        index_factory=str(index.get("factory") or "Flat"),
        index_params=index.get("params") or {},
        recall_k=int(index.get("recall_k") or 100),
        opset=opset,
        max_len=int(cfg.datamodule.max_len),
        commit=commit,
        overwrite=overwrite,
        extra={"dataset": {"name": data.meta["name"], "hash": data.meta["config_hash"]}, **(extra or {})},
        extra_exports=extra_exports,
    )


def export_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """``shopformer-export``: the bundle of ``cfg.ckpt`` at ``cfg.out``; returns the summary line."""
    out = Path(cfg.out)
    check_target(out, bool(cfg.overwrite))  # before loading data and model
    checkpoint = load_checkpoint(cfg.ckpt)
    run_cfg = checkpoint_config(checkpoint)
    run_cfg.paths.cache_dir = cfg.paths.cache_dir
    dm = build_datamodule(run_cfg)
    dm.setup()
    model = restore_model(checkpoint, run_cfg, dm)
    started = time.perf_counter()
    path = export_run(
        model,
        run_cfg,
        dm,
        out,
        version=str(cfg.version or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())),
        metrics=best_score(checkpoint),
        index=cfg.index,
        name=cfg.name,
        commit=checkpoint.get("shopformer_git_commit"),
        recall_queries=int(cfg.recall_queries),
        opset=cfg.opset,
        overwrite=bool(cfg.overwrite),
    )
    manifest = json.loads((path / "manifest.json").read_text())
    return {
        "bundle": str(path),
        "name": manifest["name"],
        "version": manifest["version"],
        "index": {"factory": manifest["index"]["factory"], "recall": manifest["index"]["recall"]["value"]},
        "seconds": round(time.perf_counter() - started, 3),
    }


@hydra.main(config_path=str(CONF_DIR), config_name="export", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    with exit_on_user_error():
        summary = export_checkpoint(cfg)
    print(json.dumps(summary), flush=True)


def main() -> None:
    quiet_libraries()
    _hydra_main()


if __name__ == "__main__":
    main()
