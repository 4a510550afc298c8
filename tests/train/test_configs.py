"""Every config recipe composes and builds its objects (datamodule, model, loss) without training."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate

from shopformer.train.config import CONF_DIR, build_dataset_spec

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (Path(CONF_DIR) / "data").glob("*.yaml"))


def compose_with(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["trainer.default_root_dir=.", *overrides])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_builds(experiment, tmp_path):
    cfg = compose_with(f"experiment={experiment}", f"paths.cache_dir={tmp_path}")
    make = instantiate(cfg.datamodule, _partial_=True)
    dm = make(dataset=build_dataset_spec(cfg.data), cache_dir=str(tmp_path))
    assert dm.max_len == cfg.datamodule.max_len
    # Every model takes the token channels (the journey model needs event types).
    channels = {"n_event_types": 5, "n_gap_buckets": 17}
    model = instantiate(cfg.model, n_items=50, max_len=cfg.datamodule.max_len, **channels)
    assert type(model) is get_class(cfg.model._target_)
    instantiate(cfg.loss)
    task = instantiate(cfg.task)
    assert task.name == ("journey" if experiment.startswith("journey") else "next_item")
    assert callable(instantiate(cfg.lit_module)) and callable(instantiate(cfg.optimizer))
    assert instantiate(cfg.schedule).decay_start == cfg.schedule.decay_start
    if task.name == "next_item":  # derived from the model and the module by interpolation
        assert cfg.datamodule.objective == get_class(cfg.model._target_).objective
        assert cfg.datamodule.with_seen == cfg.lit_module.exclude_seen


@pytest.mark.parametrize("data", [d for d in DATASETS if d != "csv"])
def test_every_dataset_config_builds_its_spec(data):
    cfg = compose_with(f"data={data}")
    spec = build_dataset_spec(cfg.data)
    assert spec.name == data and spec.config_hash()


def test_hparams_search_composes():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=sasrec_grid"], return_hydra_config=True)
    assert "optimizer.lr" in cfg.hydra.sweeper.params
