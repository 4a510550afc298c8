"""Hydra glue: where conf/ is, and building data objects from a composed config."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from torch import nn

from shopformer.data.datamodule import SequenceDataModule
from shopformer.data.store import DatasetSpec

CONF_DIR = Path(os.environ.get("SHOPFORMER_CONF", Path(__file__).resolve().parents[2] / "conf"))


def build_dataset_spec(data: DictConfig) -> DatasetSpec:
    """A :class:`DatasetSpec` from a ``conf/data/*.yaml`` node (its ``_target_`` parts)."""
    return DatasetSpec(
        name=data.name,
        source=instantiate(data.source, _convert_="all"),
        sequence_key=data.sequence_key,
        preprocess=instantiate(data.preprocess, _convert_="all"),
        split=instantiate(data.split, _convert_="all"),
    )


def build_datamodule(cfg: DictConfig) -> SequenceDataModule:
    """The datamodule of a composed config (``data``, ``datamodule``, ``paths`` nodes)."""
    # Partial first: instantiate() would turn a dataclass argument into a DictConfig.
    make = instantiate(cfg.datamodule, _partial_=True)
    return make(dataset=build_dataset_spec(cfg.data), cache_dir=cfg.paths.cache_dir)


def model_objective(cfg: DictConfig) -> str:
    """The training objective (``next_item`` / ``masked``) of the model class of ``cfg.model``."""
    return getattr(get_class(cfg.model._target_), "objective", "next_item")


def build_model(cfg: DictConfig, dm) -> nn.Module:
    """The model of ``cfg.model``, sized by the datamodule (items, max length, channels)."""
    return instantiate(
        cfg.model,
        n_items=dm.n_items,
        max_len=cfg.datamodule.max_len,
        n_event_types=dm.n_event_types if cfg.features.event_types else 0,
        n_gap_buckets=dm.n_gap_buckets if cfg.datamodule.gap_buckets else 0,
    )
