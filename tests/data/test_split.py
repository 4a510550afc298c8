"""Splits and leakage: no target, and no event after it, is ever visible to training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopformer.data.datamodule import SequenceDataModule
from shopformer.data.preprocess import PreprocessConfig
from shopformer.data.sources import FrameSource, SyntheticSource
from shopformer.data.split import CONTEXT, TEST, TRAIN, VALID, LeaveOneOut, Temporal
from shopformer.data.store import DatasetSpec, build
from shopformer.errors import DataError


def roles_of(split, seq, ts=None, item=None, has_timestamps=True):
    seq = np.asarray(seq)
    ts = np.arange(len(seq)) if ts is None else np.asarray(ts)
    item = np.arange(1, len(seq) + 1) if item is None else np.asarray(item)
    return split.assign(seq, ts, item, has_timestamps)[0].tolist()


def test_leave_one_out_roles():
    roles = roles_of(LeaveOneOut(), [0, 0, 0, 0, 1, 1, 2, 2, 2])
    assert roles == [TRAIN, TRAIN, VALID, TEST, TRAIN, TRAIN, TRAIN, VALID, TEST]


def test_temporal_roles_and_targets_need_history():
    seq = [0, 0, 0, 1, 1, 2]
    ts = [1, 5, 9, 6, 10, 10]
    split = Temporal(valid_cutoff=5, test_cutoff=9, drop_cold_targets=False)
    # seq 2 starts after the cut-off: no history, so its event is context only.
    assert roles_of(split, seq, ts) == [TRAIN, VALID, TEST, CONTEXT, TEST, CONTEXT]
    first = Temporal(valid_cutoff=2, test_cutoff=100, targets="first", drop_cold_targets=False)
    assert roles_of(first, [0, 0, 0, 0], [1, 3, 4, 5]) == [TRAIN, VALID, CONTEXT, CONTEXT]


def test_temporal_cold_targets_become_context():
    split = Temporal(valid_cutoff=2, test_cutoff=3)
    roles = roles_of(split, [0, 0, 0], [1, 2, 3], item=[1, 1, 7])
    assert roles == [TRAIN, VALID, CONTEXT]


def test_temporal_cutoffs_from_days_and_fractions():
    ts = np.arange(0, 10 * 86400, 3600)
    valid, test = Temporal(test_days=1, valid_days=2).cutoffs(ts)
    assert test == ts.max() - 86400 and valid == test - 2 * 86400
    valid, test = Temporal(valid_fraction=0.2, test_fraction=0.1).cutoffs(ts)
    assert (ts < valid).mean() == pytest.approx(0.7, abs=0.01)
    assert (ts >= test).mean() == pytest.approx(0.1, abs=0.01)
    valid, test = Temporal(valid_cutoff="1970-01-03", test_cutoff=3 * 86400).cutoffs(ts)
    assert (valid, test) == (2 * 86400, 3 * 86400)


def test_temporal_refuses_order_only_data():
    frame = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [1, 2, 3], "timestamp": [0, 1, 2]})
    spec = DatasetSpec("x", FrameSource(frame, has_timestamps=False), split=Temporal())
    with pytest.raises(DataError, match="needs real timestamps"):
        build(spec)


def training_view(dm: SequenceDataModule) -> dict[int, set[int]]:
    """Per sequence, the flat positions any training batch exposes (inputs and targets)."""
    ds = dm.data
    seen: dict[int, set[int]] = {}
    train = dm.train_set
    for i in range(len(train)):
        start, end = int(train.starts[i]), int(train.ends[i])
        first = max(start, end - dm.max_len - 1)
        seen.setdefault(int(ds.seq[start]), set()).update(range(first, end))
    # The index bookkeeping above must match what the batches actually contain.
    batch = train.__getitems__(list(range(min(64, len(train)))))
    for row, (start, end) in enumerate(zip(train.starts[:64], train.ends[:64], strict=False)):
        expect = ds.item[max(start, end - dm.max_len - 1) : end]
        got = np.r_[batch["item_ids"][row].numpy(), batch["targets"][row, -1].item()]
        np.testing.assert_array_equal(got[got > 0][-len(expect) :], expect)
    return seen


@pytest.mark.parametrize(
    ("split", "key"),
    [
        (LeaveOneOut(), "user"),
        (Temporal(valid_fraction=0.1, test_fraction=0.1), "user"),
        (Temporal(valid_fraction=0.15, test_fraction=0.15, targets="first"), "session"),
    ],
)
@pytest.mark.parametrize("windows", ["last", "sliding"])
def test_no_leakage_into_training(split, key, windows, tmp_path):
    spec = DatasetSpec(
        "syn", SyntheticSource(n_users=400, n_items=300, seed=3), key, PreprocessConfig(), split
    )
    dm = SequenceDataModule(spec, cache_dir=None, max_len=8, train_windows=windows)
    dm.setup()
    ds = dm.data
    seen = training_view(dm)
    targets = np.flatnonzero((ds.role == VALID) | (ds.role == TEST))
    assert len(targets) > 0
    first_target = {}
    for pos in targets:
        s = int(ds.seq[pos])
        first_target[s] = min(first_target.get(s, pos), pos)
    for s, positions in seen.items():
        if s in first_target:
            assert max(positions) < first_target[s], f"sequence {s} leaks a target into training"
    # In time, too: every training event precedes every target of the whole log when temporal.
    if isinstance(split, Temporal):
        assert ds.ts[ds.role == TRAIN].max() < ds.ts[targets].min()
    # Evaluation histories end right before their target and never include it.
    for eval_set in (dm.valid_set, dm.test_set):
        batch = eval_set.__getitems__(list(range(len(eval_set))))
        pos = batch["position"].numpy()
        assert (ds.ts[pos - 1] <= ds.ts[pos]).all()
        assert (ds.seq[pos - 1] == ds.seq[pos]).all()
        np.testing.assert_array_equal(batch["item_ids"][:, -1].numpy(), ds.item[pos - 1])
        np.testing.assert_array_equal(batch["target"].numpy(), ds.item[pos])
