"""Tiny training runs for tests: a small synthetic dataset, pinned output paths."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from shopformer.train.config import CONF_DIR

SMALL = [
    "data.source.n_users=400",
    "data.source.n_items=150",
    "datamodule.max_len=20",
    "datamodule.batch_size=64",
    "trainer.max_epochs=2",
    "trainer.precision=32-true",  # test figures must not depend on which precision this processor favours
    "export=false",  # the runs that test the bundle turn it back on
]


def compose_train(tmp_path, *overrides: str):
    # Outside @hydra.main ${hydra:runtime.output_dir} has no value: pin the output paths.
    pinned = [
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"trainer.default_root_dir={tmp_path / 'run'}",
        f"callbacks.model_checkpoint.dirpath={tmp_path / 'run' / 'checkpoints'}",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*pinned, *SMALL, *overrides])
