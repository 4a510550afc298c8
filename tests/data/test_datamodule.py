"""SequenceDataModule batches against a slow per-sequence reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from shopformer.data.datamodule import SequenceDataModule
from shopformer.data.sources import FrameSource, SyntheticSource
from shopformer.data.split import TRAIN
from shopformer.data.store import DatasetSpec
from shopformer.errors import DataError


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return DatasetSpec("syn", SyntheticSource(n_users=300, n_items=200, seed=5))


def module(spec, **kw) -> SequenceDataModule:
    dm = SequenceDataModule(spec, cache_dir=None, **kw)
    dm.setup()
    return dm


def reference_train_window(dm, s: int) -> np.ndarray:
    ds = dm.data
    items = ds.item[ds.seq == s][ds.role[ds.seq == s] == TRAIN]
    return items[-(dm.max_len + 1) :]


def test_next_item_batches_match_reference(spec):
    dm = module(spec, max_len=12, batch_size=32, gap_buckets=True)
    batches = list(dm.train_dataloader())
    assert sum(len(b["item_ids"]) for b in batches) == len(dm.train_set)
    for batch in batches[:3]:
        assert set(batch) == {"item_ids", "targets", "event_types", "gap_buckets", "seq_index"}
        assert batch["item_ids"].dtype == torch.int64 and batch["item_ids"].shape[1] == 12
        for row in range(len(batch["item_ids"])):
            window = reference_train_window(dm, int(batch["seq_index"][row]))
            inputs, targets = batch["item_ids"][row].numpy(), batch["targets"][row].numpy()
            n = len(window) - 1
            np.testing.assert_array_equal(inputs[-n:], window[:-1])
            np.testing.assert_array_equal(targets[-n:], window[1:])
            assert (inputs[:-n] == 0).all() and (targets[:-n] == 0).all()
            assert (batch["event_types"][row].numpy()[-n:] > 0).all()
            assert (batch["gap_buckets"][row].numpy()[:-n] == 0).all()


def test_sliding_windows_cover_every_training_target_once(spec):
    last = module(spec, max_len=4)
    sliding = module(spec, max_len=4, train_windows="sliding")
    assert len(sliding.train_set) > len(last.train_set)
    n_targets = sum(int((b["targets"] > 0).sum()) for b in sliding.train_dataloader())
    ds = sliding.data
    per_seq_train = np.bincount(ds.seq[ds.role == TRAIN], minlength=ds.n_sequences)
    assert n_targets == int(np.maximum(per_seq_train - 1, 0).sum())


def test_next_item_samples_mask_only_the_last_item(spec):
    """mask_last_prob=1: every row is a next-item sample; 0.5: about half the rows are."""
    torch.manual_seed(0)
    every = module(spec, max_len=10, objective="masked", mask_prob=0.3, mask_last_prob=1.0)
    batch = next(iter(every.train_dataloader()))
    masked = batch["item_ids"] == every.mask_id
    assert masked[:, -1].all() and not masked[:, :-1].any()
    assert ((batch["targets"] > 0) == masked).all()
    half = module(spec, max_len=10, objective="masked", mask_prob=0.3, mask_last_prob=0.5)
    rows = torch.cat([(b["item_ids"] == half.mask_id).sum(dim=1) for b in half.train_dataloader()])
    long_rows = torch.cat([(b["item_ids"] > 0).sum(dim=1) for b in half.train_dataloader()]) >= 8
    single = (rows[long_rows] == 1).float().mean()  # by chance alone, ~12 % of long rows mask one item
    assert 0.4 < float(single) < 0.75
    with pytest.raises(DataError, match="mask_last_prob must lie in"):
        module(spec, max_len=10, objective="masked", mask_last_prob=1.5)


def test_masked_batches(spec):
    torch.manual_seed(0)
    dm = module(spec, max_len=10, objective="masked", mask_prob=0.3)
    batch = next(iter(dm.train_dataloader()))
    items, targets = batch["item_ids"], batch["targets"]
    masked = items == dm.mask_id
    assert dm.mask_id == dm.n_items
    assert masked.any(dim=1).all(), "every row has a masked position"
    assert ((targets > 0) == masked).all()
    assert (batch["event_types"][masked] == 0).all()
    for row in range(len(items)):
        window = dm.data.item[dm.data.seq == int(batch["seq_index"][row])]
        window = window[dm.data.role[dm.data.seq == int(batch["seq_index"][row])] == TRAIN]
        restored = torch.where(masked[row], targets[row], items[row]).numpy()
        np.testing.assert_array_equal(restored[restored > 0], window[-10:])
    rate = masked.sum() / (items > 0).sum()
    assert 0.2 < float(rate) < 0.45
    torch.manual_seed(1)
    other = next(iter(dm.train_dataloader()))
    assert not torch.equal(other["item_ids"], items) or not torch.equal(other["targets"], targets)


@pytest.mark.parametrize("objective", ["next_item", "masked"])
def test_one_event_sequences_are_not_training_rows(objective):
    """A single training event has no next item and, masked, teaches only popularity."""
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "c", "c"],
            "item_id": [1, 2, 3, 4, 5, 6],
            "timestamp": [0, 1, 2, 3, 4, 5],
        }
    )
    dm = module(DatasetSpec("tiny", FrameSource(frame)), max_len=5, objective=objective)
    ds = dm.data
    rows = {int(s) for b in dm.train_dataloader() for s in b["seq_index"]}
    lengths = np.bincount(ds.seq[ds.role == TRAIN], minlength=ds.n_sequences)
    assert rows == {s for s in range(ds.n_sequences) if lengths[s] >= 2} and lengths.min() == 1


def test_eval_batches_leave_one_out(spec):
    dm = module(spec, max_len=6)
    ds = dm.data
    valid = next(iter(dm.val_dataloader()))
    test = next(iter(dm.test_dataloader()))
    assert len(dm.valid_set) == len(dm.test_set) == int((np.diff(ds.offsets) >= 3).sum())
    for row in range(5):
        s = int(test["seq_index"][row])
        seq_items = ds.item[ds.offsets[s] : ds.offsets[s + 1]]
        assert int(test["target"][row]) == seq_items[-1]
        # The test history ends with the validation item.
        history = test["item_ids"][row].numpy()
        np.testing.assert_array_equal(history[history > 0], seq_items[:-1][-6:])
        assert history[-1] == seq_items[-2]
        vs = int(valid["seq_index"][row])
        assert int(valid["target"][row]) == ds.item[ds.offsets[vs + 1] - 2]


def test_gap_buckets_refused_without_timestamps():
    frame = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [1, 2, 3], "timestamp": [0, 1, 2]})
    spec = DatasetSpec("order-only", FrameSource(frame, has_timestamps=False))
    with pytest.raises(DataError, match="no real timestamps"):
        module(spec, gap_buckets=True)


def test_bad_options_fail_early(spec):
    with pytest.raises(DataError, match="objective"):
        SequenceDataModule(spec, objective="autoregressive")
    with pytest.raises(DataError, match="must be false, true, sequences or tokens; got 'events'"):
        SequenceDataModule(spec, length_bucketing="events")


def test_token_bucketed_training_batches_cover_every_training_target_once(spec):
    plain = module(spec, max_len=50, batch_size=16)
    tokens = module(spec, max_len=50, batch_size=16, length_bucketing="tokens")

    def targets(dm) -> np.ndarray:
        batches = list(dm.train_dataloader())
        assert len(batches) == len(dm.train_dataloader())
        return np.sort(np.concatenate([b["targets"][b["targets"] > 0].numpy() for b in batches]))

    np.testing.assert_array_equal(targets(tokens), targets(plain))


def test_bucketed_eval_batches_cover_every_target_once_shortest_first(spec):
    dm = module(spec, max_len=50, eval_batch_size=32, length_bucketing=True)
    plain = module(spec, max_len=50, eval_batch_size=32, length_bucketing=False)
    batches = list(dm.test_dataloader())
    widths = [b["item_ids"].shape[1] for b in batches]
    assert widths == sorted(widths) and widths[0] < widths[-1]  # trimmed, shortest first
    got = np.sort(np.concatenate([b["position"].numpy() for b in batches]))
    want = np.sort(np.concatenate([b["position"].numpy() for b in plain.test_dataloader()]))
    np.testing.assert_array_equal(got, want)
