"""Journey batches: token windows labelled at every position (training) or one prefix each (evaluation).

Labels are the flat arrays of :mod:`shopformer.data.journey` (``IGNORE`` = no loss). Batches:

- training: ``item_ids``, ``event_types``, ``gap_buckets`` (if on) [B, L], and per position
  ``next_event``, ``conversion``, ``abandonment`` (IGNORE where undefined or outside the training
  sessions) and ``targets`` (next item, 0 = none).
- evaluation: the same channels for the window that ends at the prefix's last event, the three
  labels of that event [B], and ``position`` (its flat index).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from shopformer.data.batches import TokenArrays, WindowSet, gather_windows, to_tensors
from shopformer.data.journey.labels import IGNORE

LABELS = ("next_event", "conversion", "abandonment")


def gather_labels(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """:func:`gather_windows` for label arrays: padding becomes ``IGNORE`` rather than 0."""
    return gather_windows(values.astype(np.int64) - IGNORE, starts, ends, length) + IGNORE


class JourneyTrainSet(WindowSet):
    """Windows ``[start, end)`` of at most ``max_len`` events, labelled at every position."""

    def __init__(
        self,
        tokens: TokenArrays,
        labels: Mapping[str, np.ndarray],
        next_item: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        max_len: int,
    ) -> None:
        super().__init__(tokens, starts, ends)
        self.labels, self.next_item, self.max_len = dict(labels), next_item, max_len

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        starts, ends = self.starts[idx], self.ends[idx]
        batch = self._channels(starts, ends, self.max_len)
        length = batch["item_ids"].shape[1]
        for name in LABELS:
            batch[name] = gather_labels(self.labels[name], starts, ends, length)
        batch["targets"] = gather_windows(self.next_item, starts, ends, length)
        batch["seq_index"] = self.tokens.seq[starts]
        return to_tensors(batch)


class JourneyEvalSet(WindowSet):
    """One sample per prefix: the (at most ``max_len``) events up to and including ``position``."""

    def __init__(
        self, tokens: TokenArrays, labels: Mapping[str, np.ndarray], positions: np.ndarray, max_len: int
    ) -> None:
        positions = np.asarray(positions, dtype=np.int64)
        super().__init__(tokens, tokens.offsets[tokens.seq[positions]], positions + 1)
        self.labels, self.positions, self.max_len = dict(labels), positions, max_len

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        batch = self._channels(self.starts[idx], self.ends[idx], self.max_len)
        positions = self.positions[idx]
        for name in LABELS:
            batch[name] = self.labels[name][positions]
        batch["position"] = positions
        return to_tensors(batch)


def train_windows(
    offsets: np.ndarray, seq: np.ndarray, labelled: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) flat ranges that cover every ``labelled`` event once, ``max_len`` events at a time.

    Per sequence, non-overlapping windows are cut backwards from its last labelled event, so each
    labelled event sees as much of its own past as a window allows; windows without a labelled
    event are dropped.
    """
    positions = np.flatnonzero(labelled)
    if not positions.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    seqs = np.unique(seq[positions])
    last = np.zeros(len(offsets) - 1, dtype=np.int64)
    np.maximum.at(last, seq[positions], positions)
    seq_start, seq_end = offsets[seqs], last[seqs] + 1
    n_windows = -(-(seq_end - seq_start) // max_len)
    back = np.arange(n_windows.sum()) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    ends = np.repeat(seq_end, n_windows) - back * max_len
    starts = np.maximum(np.repeat(seq_start, n_windows), ends - max_len)
    count = np.r_[0, np.cumsum(labelled)]
    keep = count[ends] > count[starts]
    return starts[keep].astype(np.int64), ends[keep].astype(np.int64)
