"""JourneyDataModule: the processed dataset as journey training windows and labelled evaluation prefixes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shopformer.data.base_datamodule import BaseDataModule
from shopformer.data.batches import TokenArrays
from shopformer.data.journey.batches import LABELS, JourneyEvalSet, JourneyTrainSet, train_windows
from shopformer.data.journey.labels import (
    IGNORE,
    PARTS,
    JourneyLabelConfig,
    JourneyLabels,
    journey_labels,
    session_starts,
)
from shopformer.data.journey.split import JourneySplit
from shopformer.data.store import DatasetSpec
from shopformer.data.vocab import PAD
from shopformer.errors import DataError


@dataclass
class JourneyExamples:
    """The labelled prefixes of one part: flat positions and their labels (IGNORE where undefined)."""

    positions: np.ndarray
    next_event: np.ndarray
    conversion: np.ndarray
    abandonment: np.ndarray

    def counts(self) -> dict[str, int]:
        return {
            "prefixes": int(len(self.positions)),
            "next_event": int((self.next_event != IGNORE).sum()),
            "conversion": int((self.conversion != IGNORE).sum()),
            "conversion_positives": int((self.conversion == 1).sum()),
            "abandonment": int((self.abandonment != IGNORE).sum()),
            "abandonment_positives": int((self.abandonment == 1).sum()),
        }


def _config(value: Any, kind: type) -> Any:
    return kind(**value) if isinstance(value, dict) else (value or kind())


class JourneyDataModule(BaseDataModule):
    """Labels every event of the processed dataset (:mod:`shopformer.data.journey`), splits whole
    sessions by start time and serves training windows and evaluation prefixes.

    Sequences are the dataset's (``data.sequence_key``): per session, or per user, where a prefix
    also sees the user's earlier sessions; labels always refer to the prefix's own session.
    """

    def __init__(
        self,
        dataset: DatasetSpec,
        cache_dir: str | os.PathLike | None = ".cache/shopformer",
        max_len: int = 50,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        labels: JourneyLabelConfig | dict | None = None,
        split: JourneySplit | dict | None = None,
        gap_buckets: bool = True,
        num_workers: int = 0,
        trim_batches: bool = True,
        length_bucketing: bool | str = False,
        objective: str = "journey",
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
        if objective != "journey":
            raise DataError(f"JourneyDataModule serves the journey objective, not {objective!r}")
        self.label_config = _config(labels, JourneyLabelConfig)
        self.split = _config(split, JourneySplit)
        self.facts: dict[str, Any] = {}

    def build(self) -> None:
        ds = self.data
        if not ds.has_timestamps:
            raise DataError(
                f"dataset '{ds.meta['name']}' has only an event order: journey labels need real "
                "timestamps (sessions and censoring at the window end)"
            )
        starts = session_starts(ds.seq, ds.session)
        self.labels: JourneyLabels = journey_labels(
            ds.event, ds.ts, starts, ds.event_vocab, self.label_config
        )
        first = np.flatnonzero(starts)
        run = np.cumsum(starts) - 1
        session_part, split_facts = self.split.assign(
            ds.ts[first], self.labels.facts["window_end"], self.label_config.censor_minutes
        )
        self.part = session_part[run]
        gap = ds.gap_buckets() if self.use_gap_buckets else None
        self.tokens = TokenArrays(item=ds.item, event=ds.event, gap=gap, seq=ds.seq, offsets=ds.offsets)
        self.examples = {name: self._examples(code) for name, code in PARTS.items()}

        train = self.part == PARTS["train"]
        train_labels = {name: np.where(train, getattr(self.labels, name), IGNORE) for name in LABELS}
        # The next item is a target only inside the training sessions (no valid / test item leaks in).
        follows = np.r_[(ds.seq[1:] == ds.seq[:-1]) & train[1:] & train[:-1], False]
        next_item = np.where(follows, np.r_[ds.item[1:], PAD], PAD)
        labelled = train & self.labels.defined()
        w_starts, w_ends = train_windows(ds.offsets, ds.seq, labelled, self.max_len)
        self.train_set = JourneyTrainSet(self.tokens, train_labels, next_item, w_starts, w_ends, self.max_len)
        label_arrays = {name: getattr(self.labels, name) for name in LABELS}
        self.valid_set = JourneyEvalSet(
            self.tokens, label_arrays, self.examples["valid"].positions, self.max_len
        )
        self.test_set = JourneyEvalSet(
            self.tokens, label_arrays, self.examples["test"].positions, self.max_len
        )
        self.facts = {
            **self.labels.facts,
            **split_facts,
            "train_windows": len(self.train_set),
            **{f"{part}_{k}": v for part, ex in self.examples.items() for k, v in ex.counts().items()},
        }
        if not len(self.train_set):
            raise DataError(f"dataset '{ds.meta['name']}': no labelled training prefixes ({self.facts})")

    def _examples(self, code: int) -> JourneyExamples:
        positions = np.flatnonzero((self.part == code) & self.labels.defined())
        return JourneyExamples(
            positions,
            self.labels.next_event[positions],
            self.labels.conversion[positions],
            self.labels.abandonment[positions],
        )

    def train_event_mask(self) -> np.ndarray:
        """The events of the training sessions."""
        return self.part == PARTS["train"]

    # -- what models and baselines need ----------------------------------
    def item_categories(self, buckets: int, column: str = "category") -> np.ndarray:
        """Category code per item id: the ``buckets - 1`` categories with most training events get
        1.., the others (and items without one) 0. All zeros when the item table has no ``column``."""
        self._require_setup()
        codes = np.zeros(self.data.n_items, dtype=np.int64)
        vocab = self.data.item_vocab
        if column not in vocab.columns or buckets < 2:
            return codes
        ids = vocab["item"].to_numpy(np.int64)
        names = vocab[column].astype("string").fillna("").to_numpy()
        counts = self.train_item_counts()[ids]
        frame = pd.DataFrame({"name": names, "n": counts})
        totals = frame[frame["name"] != ""].groupby("name")["n"].sum()
        totals = totals[totals > 0].sort_values(ascending=False, kind="stable")
        rank = pd.Series(np.arange(1, len(totals) + 1), index=totals.index)
        rank = rank[rank < buckets]
        codes[ids] = pd.Series(names).map(rank).fillna(0).to_numpy(np.int64)
        return codes

    def category_statistics(self, column: str = "category", smoothing: float = 20.0) -> np.ndarray:
        """Per item id, float32 [n_items, n_event_classes + 1], from the training sessions' events of its
        category: for each event type, log(share of the category's events) - log(share of all events),
        the share smoothed towards the overall one with ``smoothing`` pseudo-events; then log1p(events).
        Zeros for padding, items without a category, and categories without training events: a
        category's statistics describe its items whether or not they were seen themselves."""
        self._require_setup()
        if not smoothing > 0:
            raise DataError(f"category statistics: smoothing must be > 0, got {smoothing}")
        ds, classes = self.data, self.n_event_classes
        out = np.zeros((ds.n_items, classes + 1), dtype=np.float32)
        vocab = ds.item_vocab
        if column not in vocab.columns:
            return out
        names = vocab[column].astype("string").fillna("")
        codes, uniques = pd.factorize(names)
        code_of = np.full(ds.n_items, -1, dtype=np.int64)
        code_of[vocab["item"].to_numpy(np.int64)] = np.where(names.to_numpy() == "", -1, codes)
        train = (self.part == PARTS["train"]) & (code_of[ds.item] >= 0)
        category, event = code_of[ds.item[train]], ds.event[train].astype(np.int64) - 1
        counts = np.zeros((len(uniques), classes))
        np.add.at(counts, (category, event), 1.0)
        overall = counts.sum(axis=0) / max(counts.sum(), 1.0)
        totals = counts.sum(axis=1, keepdims=True)
        shares = (counts + smoothing * overall) / (totals + smoothing)
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = np.where(overall > 0, np.log(shares) - np.log(overall), 0.0)
        table = np.hstack([lift, np.log1p(totals)])  # a category without training events: all zeros
        known = code_of >= 0
        out[known] = table[code_of[known]]
        out[0] = 0.0
        return out

    def class_prior(self) -> np.ndarray:
        """Share of each next-event class among the training labels (float64 [n_classes])."""
        self._require_setup()
        labels = self.examples["train"].next_event
        counts = np.bincount(labels[labels != IGNORE], minlength=self.n_event_classes).astype(np.float64)
        return counts / max(counts.sum(), 1.0)

    @property
    def event_classes(self) -> list[str]:
        """Next-event class names (class ``c`` is event type id ``c + 1``)."""
        self._require_setup()
        return list(self.data.event_vocab[1:])

    @property
    def n_event_classes(self) -> int:
        return len(self.event_classes)
