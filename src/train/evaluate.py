"""``shopformer-eval``: a checkpoint's metrics on a split, as its task defines them (next-item models: full
ranking under both protocols, over all items and excluding the history; journey models: every head)."""

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
from shopformer.train.config import CONF_DIR, build_datamodule, build_task
from shopformer.train.quiet import quiet_libraries

PROTOCOLS = {"all_items": False, "exclude_seen": True}


def evaluate(
    ckpt: str | Path,
    split: str = "test",
    protocols=("all_items", "exclude_seen"),
    accelerator: str = "auto",
    cache_dir: str | None = None,
    ranks_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of the checkpoint's model on ``split`` for each protocol (with ``ranks_dir``, a ranking
    model's per-query ranks too: ``<ranks_dir>/<protocol>.parquet``)."""
    if split not in ("test", "valid"):
        raise ConfigError(f"split must be 'test' or 'valid', got {split!r}")
    checkpoint = load_checkpoint(ckpt)
    cfg = checkpoint_config(checkpoint)
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        raise ConfigError(f"unknown protocol(s) {unknown}; choose from {sorted(PROTOCOLS)}")
    task = build_task(cfg)
    if "with_seen" in cfg.datamodule:  # the exclude-seen ranking needs each user's whole history
        OmegaConf.update(cfg, "datamodule.with_seen", "exclude_seen" in protocols)
    if cache_dir:
        cfg.paths.cache_dir = cache_dir
    dm = build_datamodule(cfg)
    dm.setup()
    model = restore_model(checkpoint, cfg, dm)
    results: dict[str, Any] = {"checkpoint": str(ckpt), "split": split, "dataset": cfg.data.name}
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    settings = {protocol: PROTOCOLS[protocol] for protocol in protocols}
    ranks = Path(ranks_dir) if ranks_dir else None
    return {**results, **task.evaluate_checkpoint(cfg, model, dm, trainer, split, settings, ranks)}


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    with exit_on_user_error():
        result = evaluate(
            cfg.ckpt, cfg.split, list(cfg.protocols), cfg.accelerator, cfg.paths.cache_dir, cfg.ranks_dir
        )
    print(json.dumps(result), flush=True)


def main() -> None:
    quiet_libraries()
    _hydra_main()


if __name__ == "__main__":
    main()
