from __future__ import annotations

import numpy as np

from shopformer.data.features import GAP_FIRST, N_GAP_BUCKETS, gap_buckets


def test_gap_buckets_grow_with_gap_and_restart_per_sequence():
    ts = np.array([0, 5, 65, 4000, 10, 10 + 40 * 86400])
    starts = np.array([True, False, False, False, True, False])
    b = gap_buckets(ts, starts)
    assert b[0] == GAP_FIRST and b[4] == GAP_FIRST
    assert b[1] < b[2] < b[3] < b[5]
    assert b.max() == N_GAP_BUCKETS - 1 and b.min() >= GAP_FIRST
