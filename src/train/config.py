"""Hydra glue: where conf/ is, the ``model_objective`` resolver, building objects from a composed config."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from shopformer.data.base_datamodule import BaseDataModule
from shopformer.data.store import DatasetSpec
from shopformer.errors import ConfigError
from shopformer.train.resume import resume_run_dir

CONF_DIR = Path(os.environ.get("SHOPFORMER_CONF", Path(__file__).resolve().parents[2] / "conf"))


def objective_of(target: str | None) -> str:
    """The training objective (``next_item`` / ``masked`` / ``journey``) of the model class ``target``."""
    if not target:
        return "next_item"
    return getattr(get_class(target), "objective", "next_item")


# ``datamodule.objective: ${model_objective:${model._target_}}``: derived from the model, never overwritten.
OmegaConf.register_new_resolver("model_objective", objective_of, replace=True)
# ``hydra.run.dir``: a new directory, or the one of the interrupted run that ``resume`` continues.
OmegaConf.register_new_resolver("resume_run_dir", resume_run_dir, replace=True)


def build_dataset_spec(data: DictConfig) -> DatasetSpec:
    """A :class:`DatasetSpec` from a ``conf/data/*.yaml`` node (its ``_target_`` parts)."""
    return DatasetSpec(
        name=data.name,
        source=instantiate(data.source, _convert_="all"),
        sequence_key=data.sequence_key,
        preprocess=instantiate(data.preprocess, _convert_="all"),
        split=instantiate(data.split, _convert_="all"),
    )


def build_datamodule(cfg: DictConfig) -> BaseDataModule:
    """The datamodule of a composed config (``data``, ``datamodule``, ``paths`` nodes)."""
    # Partial first: instantiate() would turn a dataclass argument into a DictConfig.
    make = instantiate(cfg.datamodule, _partial_=True)
    return make(dataset=build_dataset_spec(cfg.data), cache_dir=cfg.paths.cache_dir)


def model_objective(cfg: DictConfig) -> str:
    """The training objective of the model class of ``cfg.model``."""
    return objective_of(cfg.model._target_)


def build_model(cfg: DictConfig, dm) -> nn.Module:
    """The model of ``cfg.model``, sized by the datamodule (items, max length, channels)."""
    return instantiate(
        cfg.model,
        n_items=dm.n_items,
        max_len=cfg.datamodule.max_len,
        n_event_types=dm.n_event_types if cfg.features.event_types else 0,
        n_gap_buckets=dm.n_gap_buckets if cfg.datamodule.gap_buckets else 0,
    )


def build_task(cfg: DictConfig) -> Any:
    """The task object of ``cfg.task`` (``conf/task/``)."""
    return instantiate(cfg.task, _convert_="all")


def check_options(node: DictConfig, name: str) -> None:
    """Refuse keys of a ``_partial_`` config node that its class does not take, naming them (Hydra
    reports those only when the partial is called, as a bare TypeError)."""
    target = get_class(node._target_)
    accepted = set(inspect.signature(target).parameters)
    unknown = sorted(set(node) - accepted - {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"})
    if unknown:
        options = ", ".join(sorted(accepted - {"self"}))
        raise ConfigError(
            f"{name}.{unknown[0]}: {target.__name__} takes no option {unknown[0]!r}"
            f"{f' (nor {unknown[1:]})' if unknown[1:] else ''}; it takes: {options}"
        )


def flat(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (MLflow parameters)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, f"{name}."))
        else:
            out[name] = value
    return out
