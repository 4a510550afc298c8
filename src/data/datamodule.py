"""SequenceDataModule: the processed dataset as Lightning train / valid / test loaders."""

from __future__ import annotations

import os

import numpy as np
from torch.utils.data import DataLoader

from shopformer.data.base_datamodule import BaseDataModule
from shopformer.data.batches import (
    EvalSet,
    MaskedItemTrainSet,
    NextItemTrainSet,
    ShortestFirstSampler,
    TokenArrays,
    batch_loader,
)
from shopformer.data.split import TRAIN
from shopformer.data.store import DatasetSpec
from shopformer.errors import DataError

OBJECTIVES = ("next_item", "masked")
TRAIN_WINDOWS = ("last", "sliding")


class SequenceDataModule(BaseDataModule):
    """Builds (or loads from cache) the processed dataset and serves padded batches.

    ``objective``: ``next_item`` (causal, SASRec/GRU4Rec) or ``masked`` (BERT4Rec).
    ``train_windows``: ``last`` = one window of the most recent ``max_len`` training
    events per sequence and epoch; ``sliding`` adds earlier, non-overlapping windows
    of long sequences. ``gap_buckets`` adds the time-gap channel (needs timestamps).
    """

    def __init__(
        self,
        dataset: DatasetSpec,
        cache_dir: str | os.PathLike | None = ".cache/shopformer",
        max_len: int = 50,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        objective: str = "next_item",
        mask_prob: float = 0.2,
        mask_last_prob: float = 0.0,
        gap_buckets: bool = False,
        train_windows: str = "last",
        num_workers: int = 0,
        trim_batches: bool = True,
        length_bucketing: bool | str = False,
        with_seen: bool = False,
    ) -> None:
        super().__init__(
            dataset,
            cache_dir,
            max_len,
            batch_size,
            eval_batch_size,
            gap_buckets,
            num_workers,
            trim_batches,
            length_bucketing,
        )
        if objective not in OBJECTIVES:
            raise DataError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if train_windows not in TRAIN_WINDOWS:
            raise DataError(f"train_windows must be one of {TRAIN_WINDOWS}, got {train_windows!r}")
        for name, p in (("mask_prob", mask_prob), ("mask_last_prob", mask_last_prob)):
            if not 0.0 <= p <= 1.0:
                raise DataError(f"{name} must lie in [0, 1], got {p!r}")
        self.objective, self.mask_prob, self.mask_last_prob = objective, mask_prob, mask_last_prob
        self.train_windows, self.with_seen = train_windows, with_seen

    def build(self) -> None:
        ds = self.data
        gap = ds.gap_buckets() if self.use_gap_buckets else None
        self.tokens = TokenArrays(item=ds.item, event=ds.event, gap=gap, seq=ds.seq, offsets=ds.offsets)
        starts, ends = self._train_windows(ds.offsets[:-1], ds.train_end())
        if self.objective == "masked":
            self.train_set = MaskedItemTrainSet(
                self.tokens, starts, ends, self.max_len, self.mask_id, self.mask_prob, self.mask_last_prob
            )
        else:
            self.train_set = NextItemTrainSet(self.tokens, starts, ends, self.max_len)
        self.valid_set = EvalSet(self.tokens, ds.target_positions("valid"), self.max_len, self.with_seen)
        self.test_set = EvalSet(self.tokens, ds.target_positions("test"), self.max_len, self.with_seen)

    def train_event_mask(self) -> np.ndarray:
        return self.data.role == TRAIN

    def _train_windows(self, starts: np.ndarray, train_end: np.ndarray):
        """(start, end) flat ranges of training samples; each needs >= 2 events."""
        # A one-event sequence has no next item, and masked it teaches only item popularity: on a
        # session log (Taobao: two thirds of the sessions) such rows would be most of BERT4Rec's epoch.
        min_events = 2
        keep = train_end - starts >= min_events
        starts, ends = starts[keep], train_end[keep]
        if self.train_windows == "last":
            return starts, ends
        step = self.max_len
        n_windows = 1 + np.maximum(ends - starts - min_events, 0) // step
        rep_starts = np.repeat(starts, n_windows)
        back = np.arange(n_windows.sum()) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
        return rep_starts, np.repeat(ends, n_windows) - back * step

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.valid_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    def _eval_loader(self, dataset: EvalSet) -> DataLoader:
        if not self.length_bucketing:
            return self.loader(dataset, self.eval_batch_size)
        # Shortest histories first (Lightning swaps in a DistributedSampler under DDP).
        sampler = ShortestFirstSampler(dataset.lengths())
        return batch_loader(dataset, self.eval_batch_size, self.num_workers, sampler=sampler)

    @property
    def mask_id(self) -> int:
        """The BERT4Rec mask token: one past the last item id."""
        return self.n_items
