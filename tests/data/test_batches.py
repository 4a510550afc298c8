"""Length-bucketed training batches: every sample once per epoch, as many steps as random batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import RandomSampler

from shopformer.data.batches import BucketBatchSampler, _even_cuts


def _lengths(n: int, seed: int = 0) -> np.ndarray:
    """Mostly short sessions with a long tail, as in the Amazon logs (capped at 50)."""
    return np.minimum(np.random.default_rng(seed).geometric(0.12, n) + 2, 50)


@pytest.mark.parametrize("balance", ["sequences", "tokens"])
@pytest.mark.parametrize("n", [1, 255, 256, 3000, 10_001])
def test_every_sample_once_per_epoch_in_as_many_batches_as_random_batching(balance, n):
    torch.manual_seed(0)
    lengths = _lengths(n)
    sampler = BucketBatchSampler(
        RandomSampler(range(n)), 256, lengths=lengths, pool_batches=8, balance=balance
    )
    batches = list(sampler)
    assert len(batches) == len(sampler) == -(-n // 256)
    assert sorted(i for batch in batches for i in batch) == list(range(n))
    assert all(batch for batch in batches)


def test_token_balanced_batches_hold_about_the_same_number_of_events():
    """What makes each target weigh the same in the step's mean loss: equal events per batch, not equal
    samples (those give a batch of short sessions a tenth of the targets of a batch of long ones)."""
    torch.manual_seed(0)
    lengths = _lengths(20_480)
    events = {}
    for balance in ("sequences", "tokens"):
        sampler = BucketBatchSampler(
            RandomSampler(range(len(lengths))), 256, lengths=lengths, balance=balance
        )
        events[balance] = np.array([lengths[batch].sum() for batch in sampler])
    spread = {b: e.max() / e.min() for b, e in events.items()}
    assert spread["sequences"] > 5  # bucketing by count: short and long batches far apart
    assert spread["tokens"] < 1.2  # by events: within 20 % (one sample of at most 50 events at a cut)
    # the padding stays small: a batch is as long as its longest sample
    sampler = BucketBatchSampler(RandomSampler(range(len(lengths))), 256, lengths=lengths, balance="tokens")
    padded = sum(len(batch) * lengths[batch].max() for batch in sampler)
    assert padded < 1.3 * lengths.sum()


@given(st.lists(st.integers(0, 60), min_size=1, max_size=300), st.integers(1, 40))
def test_even_cuts_give_non_empty_runs_in_order(lengths, parts):
    parts = min(parts, len(lengths))
    cuts = _even_cuts(np.array(lengths), parts)
    runs = np.split(np.arange(len(lengths)), cuts)
    assert len(runs) == parts and all(len(r) for r in runs)


def test_an_unknown_balance_is_refused():
    with pytest.raises(ValueError, match="balance must be one of"):
        BucketBatchSampler(RandomSampler(range(3)), 2, lengths=[1, 2, 3], balance="items")


def test_under_ddp_lightning_rebuilds_it_around_each_process_share():
    """Lightning swaps in a DistributedSampler by re-creating a BatchSampler with its saved arguments:
    each process buckets its half, with the same balance."""
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

    from shopformer.data.batches import training_loader

    class Windows(Dataset):
        def __init__(self, n: int) -> None:
            self.sizes = _lengths(n)

        def lengths(self) -> np.ndarray:
            return self.sizes

        def __len__(self) -> int:
            return len(self.sizes)

        def __getitems__(self, indices: list[int]) -> list[int]:
            return indices

    data = Windows(4096)
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        loader = training_loader(data, 64, 0, "tokens")
    shares = []
    for rank in (0, 1):
        sharded = _update_dataloader(loader, DistributedSampler(data, num_replicas=2, rank=rank, seed=0))
        assert isinstance(sharded.batch_sampler, BucketBatchSampler)
        assert sharded.batch_sampler.balance == "tokens"
        shares.append(sorted(i for batch in sharded for i in batch))
    assert len(shares[0]) == len(shares[1]) == 2048 and not set(shares[0]) & set(shares[1])
