"""``shopformer-eval``: evaluate a checkpoint by full ranking on a split, under both ranking protocols."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from shopformer.data.schema import DataError
from shopformer.train.config import CONF_DIR, build_datamodule
from shopformer.train.module import RecommenderModule
from shopformer.train.train import build_model, model_objective

PROTOCOLS = {"all_items": False, "exclude_seen": True}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A shopformer checkpoint (no pickled objects: ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path.resolve()}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"{path}: cannot be loaded without unpickling objects ({first})") from None
    if not checkpoint.get("shopformer_config"):
        raise DataError(f"{path}: not a shopformer checkpoint (no 'shopformer_config' in it)")
    return checkpoint


def evaluate(
    ckpt: str | Path,
    split: str = "test",
    protocols=("all_items", "exclude_seen"),
    accelerator: str = "auto",
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Metrics of the checkpoint's model on ``split`` for each protocol."""
    if split not in ("test", "valid"):
        raise DataError(f"split must be 'test' or 'valid', got {split!r}")
    checkpoint = load_checkpoint(ckpt)
    cfg = OmegaConf.create(checkpoint["shopformer_config"])
    OmegaConf.update(cfg, "datamodule.objective", model_objective(cfg), force_add=True)
    OmegaConf.update(cfg, "datamodule.with_seen", "exclude_seen" in protocols, force_add=True)
    if cache_dir:
        cfg.paths.cache_dir = cache_dir
    dm = build_datamodule(cfg)
    dm.setup()
    model = build_model(cfg, dm)
    state = {
        k.removeprefix("model.").replace("_orig_mod.", ""): v for k, v in checkpoint["state_dict"].items()
    }
    model.load_state_dict(state)
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
            raise DataError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")
        module_cfg = {**OmegaConf.to_container(cfg.module, resolve=True), "exclude_seen": PROTOCOLS[protocol]}
        module = RecommenderModule(model, None, **module_cfg)
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
    try:
        result = evaluate(cfg.ckpt, cfg.split, list(cfg.protocols), cfg.accelerator, cfg.paths.cache_dir)
    except DataError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result), flush=True)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
