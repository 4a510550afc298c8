"""Same config and seed, same numbers on CPU: whether the dataset is built or read from its cache;
every run records its commit, package versions and dataset hash."""

from __future__ import annotations

import json

from hydra import compose, initialize_config_dir

from shopformer.train.config import CONF_DIR
from shopformer.train.resume import FINISHED
from shopformer.train.train import run
from tests.train.runs import SMALL


def _compose(cache, run_dir, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                f"paths.cache_dir={cache}",
                f"trainer.default_root_dir={run_dir}",
                f"callbacks.model_checkpoint.dirpath={run_dir / 'checkpoints'}",
                *SMALL,
                "logger=none",
                "threads=1",
                *overrides,
            ],
        )


def test_same_seed_same_metrics_cold_and_warm_cache(tmp_path):
    cache = tmp_path / "cache"
    cold = run(_compose(cache, tmp_path / "a"))  # builds the dataset
    warm = run(_compose(cache, tmp_path / "b"))  # reads it from the cache
    assert cold["test"] == warm["test"]  # exactly
    other = run(_compose(cache, tmp_path / "c", "seed=7"))
    assert other["test"] != cold["test"]  # the seed matters: the equality above is not vacuous
    record = json.loads((tmp_path / "a" / FINISHED).read_text())
    assert record["git_commit"] and record["dataset"]["hash"] == cold["dataset"]["hash"]
    assert {"python", "torch", "lightning", "numpy", "processor"} <= set(record["environment"])
