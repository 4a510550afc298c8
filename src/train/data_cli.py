"""``shopformer-data``: build or load a processed dataset, print its statistics."""

from __future__ import annotations

import time

import hydra
from omegaconf import DictConfig

from shopformer.data.stats import dataset_stats, format_row, format_stats
from shopformer.errors import exit_on_user_error
from shopformer.train.config import CONF_DIR, build_datamodule
from shopformer.train.quiet import quiet_libraries


def prepare(cfg: DictConfig) -> dict:
    """Build/load the dataset of ``cfg``, print the stats table; return the stats."""
    started = time.perf_counter()
    dm = build_datamodule(cfg)
    dm.setup()
    stats = dataset_stats(dm.data)
    state = "loaded from cache" if dm.from_cache else "built"
    seconds = time.perf_counter() - started
    print(format_stats(stats))
    print(format_row("processed dataset", f"{dm.data_dir} ({state} in {seconds:.2f} s)"))
    if cfg.get("check_batches", False):
        started = time.perf_counter()
        n_batches = n_targets = 0
        shape = None
        for batch in dm.train_dataloader():
            n_batches += 1
            n_targets += int((batch["targets"] > 0).sum())
            shape = shape or list(batch["item_ids"].shape)
        seconds = time.perf_counter() - started
        print(
            format_row(
                "train epoch",
                f"{n_batches} batches of {shape}, {n_targets:,} targets, built in {seconds:.2f} s",
            )
        )
    return stats


@hydra.main(config_path=str(CONF_DIR), config_name="prepare", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        prepare(cfg)


def main() -> None:
    quiet_libraries()
    _hydra_main()


if __name__ == "__main__":
    main()
