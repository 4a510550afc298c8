"""SequenceDataModule: the processed dataset as Lightning train / valid / test loaders."""

from __future__ import annotations

import os

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from shopformer.data.batches import (
    EvalSet,
    MaskedItemTrainSet,
    NextItemTrainSet,
    ShortestFirstSampler,
    TokenArrays,
    batch_loader,
    training_loader,
)
from shopformer.data.features import N_GAP_BUCKETS
from shopformer.data.schema import DataError
from shopformer.data.split import TRAIN
from shopformer.data.store import DatasetSpec, ProcessedDataset, load_or_build

OBJECTIVES = ("next_item", "masked")
TRAIN_WINDOWS = ("last", "sliding")


class DatasetSizes:
    """What models need to size themselves, read from a datamodule's processed dataset (``self.data``)."""

    data: ProcessedDataset | None

    @property
    def n_items(self) -> int:
        """Item id space including padding (0)."""
        self._require_setup()
        return self.data.n_items

    @property
    def n_event_types(self) -> int:
        self._require_setup()
        return len(self.data.event_vocab)

    @property
    def n_gap_buckets(self) -> int:
        return N_GAP_BUCKETS

    def _require_setup(self) -> None:
        if self.data is None:
            raise RuntimeError("call setup() first")


class SequenceDataModule(DatasetSizes, L.LightningDataModule):
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
        gap_buckets: bool = False,
        train_windows: str = "last",
        num_workers: int = 0,
        trim_batches: bool = True,
        length_bucketing: bool = False,
        with_seen: bool = False,
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise DataError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if train_windows not in TRAIN_WINDOWS:
            raise DataError(f"train_windows must be one of {TRAIN_WINDOWS}, got {train_windows!r}")
        if max_len < 1:
            raise DataError(f"max_len must be >= 1, got {max_len}")
        self.spec = dataset
        self.cache_dir = cache_dir
        self.max_len, self.batch_size, self.eval_batch_size = max_len, batch_size, eval_batch_size
        self.objective, self.mask_prob = objective, mask_prob
        self.use_gap_buckets, self.train_windows, self.num_workers = (gap_buckets, train_windows, num_workers)
        self.trim_batches, self.length_bucketing, self.with_seen = trim_batches, length_bucketing, with_seen
        self.data: ProcessedDataset | None = None
        self.data_dir = None
        self.from_cache = False

    # -- Lightning hooks -------------------------------------------------
    def prepare_data(self) -> None:
        """Build the processed dataset once (rank 0) so that every rank loads it from cache."""
        if self.data is None and self.cache_dir is not None:
            load_or_build(self.spec, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        self.data, self.data_dir, self.from_cache = load_or_build(self.spec, self.cache_dir)
        ds = self.data
        gap = ds.gap_buckets() if self.use_gap_buckets else None
        self.tokens = TokenArrays(item=ds.item, event=ds.event, gap=gap, seq=ds.seq, offsets=ds.offsets)
        starts, ends = self._train_windows(ds.offsets[:-1], ds.train_end())
        if self.objective == "masked":
            self.train_set = MaskedItemTrainSet(
                self.tokens, starts, ends, self.max_len, self.mask_id, self.mask_prob
            )
        else:
            self.train_set = NextItemTrainSet(self.tokens, starts, ends, self.max_len)
        self.valid_set = EvalSet(self.tokens, ds.target_positions("valid"), self.max_len, self.with_seen)
        self.test_set = EvalSet(self.tokens, ds.target_positions("test"), self.max_len, self.with_seen)
        for dataset in (self.train_set, self.valid_set, self.test_set):
            dataset.trim = self.trim_batches

    def _train_windows(self, starts: np.ndarray, train_end: np.ndarray):
        """(start, end) flat ranges of training samples; each needs >= 2 events."""
        min_events = 2 if self.objective == "next_item" else 1
        keep = train_end - starts >= min_events
        starts, ends = starts[keep], train_end[keep]
        if self.train_windows == "last":
            return starts, ends
        step = self.max_len
        n_windows = 1 + np.maximum(ends - starts - min_events, 0) // step
        rep_starts = np.repeat(starts, n_windows)
        back = np.arange(n_windows.sum()) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
        return rep_starts, np.repeat(ends, n_windows) - back * step

    def _loader(self, dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return batch_loader(dataset, batch_size, self.num_workers, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return training_loader(self.train_set, self.batch_size, self.num_workers, self.length_bucketing)

    def train_item_counts(self) -> np.ndarray:
        """Number of training events per item id (index 0 = padding, always 0)."""
        self._require_setup()
        ds = self.data
        counts = np.bincount(ds.item[ds.role == TRAIN], minlength=ds.n_items)
        counts[0] = 0
        return counts

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.valid_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    def _eval_loader(self, dataset: EvalSet) -> DataLoader:
        if not self.length_bucketing:
            return self._loader(dataset, self.eval_batch_size, shuffle=False)
        # Shortest histories first (Lightning swaps in a DistributedSampler under DDP).
        sampler = ShortestFirstSampler(dataset.lengths())
        return batch_loader(dataset, self.eval_batch_size, self.num_workers, sampler=sampler)

    @property
    def mask_id(self) -> int:
        """The BERT4Rec mask token: one past the last item id."""
        return self.n_items
