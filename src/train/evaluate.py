"""``shopformer-eval``: evaluate a checkpoint by full ranking on a split, under both ranking protocols."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from shopformer.errors import ConfigError, exit_on_user_error
from shopformer.train.checkpoint import checkpoint_config, load_checkpoint, restore_model
from shopformer.train.config import CONF_DIR, build_datamodule, model_objective
from shopformer.train.module import RecommenderModule

PROTOCOLS = {"all_items": False, "exclude_seen": True}
RANKING_OPTIONS = ("ks", "eval_chunk_size")


def evaluate(
    ckpt: str | Path,
    split: str = "test",
    protocols=("all_items", "exclude_seen"),
    accelerator: str = "auto",
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Metrics of the checkpoint's model on ``split`` for each protocol."""
    if split not in ("test", "valid"):
        raise ConfigError(f"split must be 'test' or 'valid', got {split!r}")
    checkpoint = load_checkpoint(ckpt)
    cfg = checkpoint_config(checkpoint)
    if model_objective(cfg) == "journey":
        raise ConfigError(
            "shopformer-eval ranks items; a journey checkpoint's metrics (and its baselines') are the test "
            "metrics in the JSON line and MLflow run of shopformer-train"
        )
    OmegaConf.update(cfg, "datamodule.with_seen", "exclude_seen" in protocols, force_add=True)
    if cache_dir:
        cfg.paths.cache_dir = cache_dir
    dm = build_datamodule(cfg)
    dm.setup()
    model = restore_model(checkpoint, cfg, dm)
    ranking = {k: v for k, v in OmegaConf.to_container(cfg.lit_module).items() if k in RANKING_OPTIONS}
    results: dict[str, Any] = {"checkpoint": str(ckpt), "split": split, "dataset": cfg.data.name}
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")
        module = RecommenderModule(model, None, **ranking, exclude_seen=PROTOCOLS[protocol])
        if split == "test":
            trainer.test(module, datamodule=dm, verbose=False)
            values = module.last_metrics["test"]
        else:
            trainer.validate(module, datamodule=dm, verbose=False)
            values = module.last_metrics["val"]
        results[protocol] = {k: round(v, 6) for k, v in values.items()}
    return results


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    with exit_on_user_error():
        result = evaluate(cfg.ckpt, cfg.split, list(cfg.protocols), cfg.accelerator, cfg.paths.cache_dir)
    print(json.dumps(result), flush=True)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
