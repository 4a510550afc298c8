"""What every task's datamodule shares: the processed dataset, its sizes, and the training loader."""

from __future__ import annotations

import os

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from shopformer.data.batches import BucketBatchSampler, batch_loader, training_loader
from shopformer.data.features import N_GAP_BUCKETS
from shopformer.data.item_attributes import item_attribute_arrays
from shopformer.data.store import DatasetSpec, ProcessedDataset, load_or_build
from shopformer.errors import DataError


class BaseDataModule(L.LightningDataModule):
    """Builds (or loads from cache) the processed dataset; subclasses turn it into train / eval sets.

    A subclass implements :meth:`build` (called once by :meth:`setup`, with ``self.data`` loaded; it
    sets ``train_set``, ``valid_set`` and ``test_set``) and :meth:`train_event_mask` (which events of
    the flat arrays are training events).
    """

    def __init__(
        self,
        dataset: DatasetSpec,
        cache_dir: str | os.PathLike | None = ".cache/shopformer",
        max_len: int = 50,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        gap_buckets: bool = False,
        num_workers: int = 0,
        trim_batches: bool = True,
        length_bucketing: bool | str = False,
    ) -> None:
        super().__init__()
        if max_len < 1:
            raise DataError(f"max_len must be >= 1, got {max_len}")
        if length_bucketing not in (False, True, *BucketBatchSampler.BALANCES):
            raise DataError(
                f"length_bucketing must be false, true, {' or '.join(BucketBatchSampler.BALANCES)}; "
                f"got {length_bucketing!r}"
            )
        self.spec, self.cache_dir = dataset, cache_dir
        self.max_len, self.batch_size, self.eval_batch_size = max_len, batch_size, eval_batch_size
        self.use_gap_buckets, self.num_workers = gap_buckets, num_workers
        self.trim_batches, self.length_bucketing = trim_batches, length_bucketing
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
        self.build()
        for dataset in (self.train_set, self.valid_set, self.test_set):
            dataset.trim = self.trim_batches

    def build(self) -> None:
        """Make ``train_set``, ``valid_set`` and ``test_set`` from ``self.data``."""
        raise NotImplementedError

    def train_event_mask(self) -> np.ndarray:
        """bool [n events]: the events of the flat arrays that belong to training."""
        raise NotImplementedError

    # -- loaders ---------------------------------------------------------
    def loader(self, dataset, batch_size: int, shuffle: bool = False) -> DataLoader:
        return batch_loader(dataset, batch_size, self.num_workers, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return training_loader(self.train_set, self.batch_size, self.num_workers, self.length_bucketing)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.valid_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.test_set, self.eval_batch_size)

    # -- what models need to size themselves -----------------------------
    def train_item_counts(self) -> np.ndarray:
        """Number of training events per item id (index 0 = padding, always 0)."""
        self._require_setup()
        counts = np.bincount(self.data.item[self.train_event_mask()], minlength=self.data.n_items)
        counts[0] = 0
        return counts

    def item_attributes(self) -> dict[str, np.ndarray]:
        """The item table's ``price``, ``in_stock`` and ``category`` per item id, those it has
        (:func:`~shopformer.data.item_attributes.item_attribute_arrays`)."""
        self._require_setup()
        return item_attribute_arrays(self.data.item_vocab)

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
