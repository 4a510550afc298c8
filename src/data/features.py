"""Token features computed identically at training and serving time (torch-free)."""

from __future__ import annotations

import numpy as np

# Upper edges (seconds) of the time-gap buckets: log-spaced from 10 s to 30 days.
GAP_EDGES_SECONDS = np.array(
    [10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400],
    dtype=np.int64,
)
GAP_PAD = 0
GAP_FIRST = 1  # the first event of a sequence has no previous event
N_GAP_BUCKETS = len(GAP_EDGES_SECONDS) + 3  # pad, first, one per edge, and "longer"


def gap_bucket_seconds() -> np.ndarray:
    """A typical gap (seconds) per bucket id: 0 for padding and first events, the geometric middle
    of each bucket's edges (half the first edge, twice the last for "longer")."""
    edges = GAP_EDGES_SECONDS.astype(np.float64)
    middles = np.sqrt(edges[:-1] * edges[1:])
    return np.concatenate([[0.0, 0.0, edges[0] / 2], middles, [edges[-1] * 2]])


def gap_buckets(timestamps: np.ndarray, sequence_starts: np.ndarray) -> np.ndarray:
    """Bucket of the time since the previous event of the same sequence, per event.

    ``timestamps`` is flat (sequences concatenated); ``sequence_starts`` marks the
    first event of each sequence (bool, same length). Returns int8 ids in
    ``[GAP_FIRST, N_GAP_BUCKETS)``.
    """
    timestamps = np.asarray(timestamps, dtype=np.int64)
    gaps = np.diff(timestamps, prepend=timestamps[:1])
    buckets = 2 + np.searchsorted(GAP_EDGES_SECONDS, np.maximum(gaps, 0), side="left")
    return np.where(np.asarray(sequence_starts, dtype=bool), GAP_FIRST, buckets).astype(np.int8)
