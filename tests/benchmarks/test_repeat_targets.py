"""The split of a model's test hits between targets already in the session and new ones."""

from __future__ import annotations

import numpy as np
import pytest

from tests.benchmarks.scripts import load_benchmark

rt = load_benchmark("repeat_targets")


def test_a_target_is_a_repeat_only_when_its_item_came_earlier_in_its_own_sequence():
    items = np.array([5, 6, 5, 7, 7, 8, 5])  # sequences: rows 0-2 and rows 3-6
    positions = np.array([2, 4, 6, 5])
    starts = np.array([0, 3, 3, 3])
    # row 2: 5 after [5, 6]; row 4: 7 after [7]; row 6: 5 is only in the other sequence; row 5: 8 new
    assert rt.repeat_flags(positions, items, starts).tolist() == [True, True, False, False]


def test_the_two_parts_add_up_to_the_cells_metrics():
    rank = np.array([0, 3, 12, 1, 40, 9])
    repeat = np.array([True, True, True, False, False, False])
    split = rt.split_hits(rank, repeat)
    assert (split["repeat_hits"], split["new_hits"]) == (2, 2)
    ndcg = np.where(rank < 10, 1 / np.log2(rank + 2), 0).mean()
    assert split["ndcg_repeat"] + split["ndcg_new"] == pytest.approx(ndcg)
    assert split["ndcg_repeat"] == pytest.approx((1 + 1 / np.log2(5)) / 6)
