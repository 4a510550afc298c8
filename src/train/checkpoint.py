"""A shopformer checkpoint loaded back into its model (``shopformer-eval``, ``shopformer-export``)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from shopformer.errors import DataError
from shopformer.models.base import SequenceRecommender
from shopformer.train.config import build_model, model_objective


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
    if not isinstance(checkpoint, dict) or not checkpoint.get("shopformer_config"):
        raise DataError(f"{path}: not a shopformer checkpoint (no 'shopformer_config' in it)")
    return checkpoint


def checkpoint_config(checkpoint: dict[str, Any]) -> DictConfig:
    """The run config stored in the checkpoint (resolved when it was written), upgraded if it is older."""
    return upgrade_config(OmegaConf.create(checkpoint["shopformer_config"]))


# Where the task and LightningModule nodes point for a config written before tasks were plug-ins.
LEGACY_TASKS = {
    "journey": ("shopformer.train.journey.task.JourneyTask", "shopformer.train.journey.module.JourneyModule"),
    "default": ("shopformer.train.next_item.NextItemTask", "shopformer.train.module.RecommenderModule"),
}
LEGACY_RANKING_KEYS = ("ks", "exclude_seen", "eval_chunk_size")
LEGACY_OPTIMIZER_KEYS = ("lr", "weight_decay", "betas")
LEGACY_SCHEDULE_KEYS = ("warmup_steps", "cosine", "min_lr_ratio", "decay_start")


def upgrade_config(cfg: DictConfig) -> DictConfig:
    """A run config of commit 85a0e90 or earlier in today's shape; a current one as it is.

    Then, there were no ``task``, ``lit_module``, ``optimizer`` and ``schedule`` nodes: the journey options
    stood under ``journey``, the ranking, optimiser and schedule options together under ``module``."""
    if all(node in cfg for node in ("task", "lit_module", "optimizer", "schedule")):
        return cfg
    objective = model_objective(cfg)
    task_target, module_target = LEGACY_TASKS.get(objective, LEGACY_TASKS["default"])
    legacy_module = OmegaConf.to_container(cfg.get("module") or {}, resolve=True)
    if objective == "journey":
        task = {"_target_": task_target, **OmegaConf.to_container(cfg.get("journey") or {}, resolve=True)}
        lit_module = {"_target_": module_target, "_partial_": True}
    else:
        task = {"_target_": task_target}
        ranking = {k: legacy_module[k] for k in LEGACY_RANKING_KEYS if k in legacy_module}
        lit_module = {"_target_": module_target, "_partial_": True, **ranking}
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True}
    optimizer.update({k: legacy_module[k] for k in LEGACY_OPTIMIZER_KEYS if k in legacy_module})
    schedule = {"_target_": "shopformer.train.schedule.LRSchedule"}
    schedule.update({k: legacy_module[k] for k in LEGACY_SCHEDULE_KEYS if k in legacy_module})
    OmegaConf.update(cfg, "optimizer", cfg.get("optimizer") or optimizer, force_add=True)
    OmegaConf.update(cfg, "schedule", cfg.get("schedule") or schedule, force_add=True)
    OmegaConf.update(cfg, "task", cfg.get("task") or task, force_add=True)
    OmegaConf.update(cfg, "lit_module", cfg.get("lit_module") or lit_module, force_add=True)
    return cfg


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's weights: the module's ``model.`` prefix and torch.compile's ``_orig_mod.`` removed."""
    return {
        key.removeprefix("model.").replace("_orig_mod.", ""): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith("model.")
    }


def restore_model(checkpoint: dict[str, Any], cfg: DictConfig, dm) -> SequenceRecommender:
    """The checkpoint's model, built for the datamodule ``dm`` (set up) and loaded with its weights."""
    model = build_model(cfg, dm)
    model.load_state_dict(model_state(checkpoint))
    return model.eval()


def best_score(checkpoint: dict[str, Any]) -> dict[str, float]:
    """``{monitor: best score}`` recorded by the checkpoint's ModelCheckpoint callback, if any."""
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if "ModelCheckpoint" in str(key) and isinstance(state, dict):
            monitor, score = state.get("monitor"), state.get("best_model_score")
            if monitor and score is not None:
                return {str(monitor): round(float(score), 6)}
    return {}
