"""Chunked full-ranking metrics in torch, checked against the NumPy reference and by hand.

Most random cases use dyadic embeddings (small integers / 2^m) so every float32 dot product is exact
whatever the BLAS blocking: chunked and reference scores are then bit-identical, ties are frequent and
the comparison with the reference can be exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from shopformer.models.ranking_metrics import FullRankingMetrics, ranks_against_catalogue
from shopformer.models.ranking_reference import ranking_metrics, target_ranks

FLOAT_KEYS = ("ndcg", "mrr")


def dyadic(gen: torch.Generator, *shape: int, scale: int = 4) -> torch.Tensor:
    """Entries in {-1, ..., 1} on a 1/scale grid: exact float32 (and bf16 for scale <= 128) products."""
    return torch.randint(-scale, scale + 1, shape, generator=gen).float() / scale


def ref_scores(
    q: torch.Tensor, e: torch.Tensor, seen: torch.Tensor | None = None, targets=None
) -> np.ndarray:
    """Float64 scores; seen items other than the target set to -inf."""
    s = (q.double() @ e.double().T).numpy()
    if seen is not None:
        for b in range(len(s)):
            drop = [i for i in seen[b].tolist() if i != int(targets[b])]
            s[b, drop] = -np.inf
    return s


def assert_metrics_match(got: dict[str, float], want: dict[str, float], ks) -> None:
    for k in ks:
        assert got[f"hr@{k}"] == want[f"hr@{k}"], k  # a ratio of integers: exact
        for name in FLOAT_KEYS:  # float64 sums in a different order: last-ulp differences only
            assert got[f"{name}@{k}"] == pytest.approx(want[f"{name}@{k}"], rel=1e-12, abs=1e-15), (name, k)


def test_random_batches_match_reference_for_every_chunk_size():
    gen = torch.Generator().manual_seed(0)
    n_items, d, ks = 23, 3, (1, 3, 10, 50)  # K=50 exceeds the catalogue
    batches = [(dyadic(gen, b, d), torch.randint(1, n_items, (b,), generator=gen)) for b in (7, 1, 12)]
    items = dyadic(gen, n_items, d)
    items[0] = 50.0  # padding row would beat everything
    want_ranks = np.concatenate([target_ranks(ref_scores(q, items), t.numpy()) for q, t in batches])
    want = ranking_metrics(want_ranks, ks)
    assert len(set(want_ranks.tolist())) > 5  # a spread of ranks, with ties (dyadic scores)
    for chunk in [*range(1, n_items + 1), 64]:
        m = FullRankingMetrics(n_items, ks=ks, chunk_size=chunk)
        got_ranks = torch.cat([m.update(q, items, t) for q, t in batches])
        np.testing.assert_array_equal(got_ranks.numpy(), want_ranks, err_msg=f"chunk={chunk}")
        got = m.compute()
        assert got["n"] == len(want_ranks)
        assert_metrics_match(got, want, ks)


def test_float_embeddings_match_reference_on_the_same_scores():
    gen = torch.Generator().manual_seed(1)
    n_items, ks = 500, (5, 20)
    q, items = torch.randn(40, 16, generator=gen), torch.randn(n_items, 16, generator=gen)
    targets = torch.randint(1, n_items, (40,), generator=gen)
    want_ranks = target_ranks((q @ items.T).numpy(), targets.numpy())
    for chunk in (64, 100, 500):
        m = FullRankingMetrics(n_items, ks=ks, chunk_size=chunk)
        np.testing.assert_array_equal(m.update(q, items, targets).numpy(), want_ranks)
        assert_metrics_match(m.compute(), ranking_metrics(want_ranks, ks), ks)


def test_bf16_inputs_are_scored_in_float32():
    gen = torch.Generator().manual_seed(2)
    n_items = 300
    q, items = dyadic(gen, 32, 8), dyadic(gen, n_items, 8)
    targets = torch.randint(1, n_items, (32,), generator=gen)
    want, _ = ranks_against_catalogue(q, items, targets, chunk_size=64)
    got, _ = ranks_against_catalogue(q.bfloat16(), items.bfloat16(), targets, chunk_size=64)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    np.testing.assert_array_equal(want.numpy(), target_ranks(ref_scores(q, items), targets.numpy()))


# Scores with q = [1]: padding 100 (ignored), item1 3, item2 5, item3 5, item4 1.
HAND_ITEMS = torch.tensor([[100.0], [3.0], [5.0], [5.0], [1.0]])


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_hand_computed_ranks_and_metrics(chunk):
    q = torch.tensor([[1.0], [1.0], [1.0], [-1.0], [1.0]])
    targets = torch.tensor([2, 3, 1, 4, 4])
    # Ties count against the target (2 and 3 both rank 1); -1 reverses the order, so 4 is first.
    m = FullRankingMetrics(5, ks=(1, 2, 10), chunk_size=chunk)
    ranks = m.update(q, HAND_ITEMS, targets)
    assert ranks.tolist() == [1, 1, 2, 0, 3]
    got = m.compute()
    assert got["n"] == 5
    assert got["hr@1"] == pytest.approx(1 / 5)
    assert got["hr@2"] == pytest.approx(3 / 5)
    assert got["hr@10"] == pytest.approx(1.0)  # K beyond the catalogue: everything is a hit
    assert got["ndcg@2"] == pytest.approx((2 / math.log2(3) + 1) / 5)
    assert got["mrr@2"] == pytest.approx((0.5 + 0.5 + 1) / 5)
    assert got["mrr@10"] == pytest.approx((0.5 + 0.5 + 1 / 3 + 1 + 1 / 4) / 5)
    # Top-1: item 2 or 3 (tied) for q = 1, item 4 for q = -1; top-2 for q = -1 is {4, 1}.
    assert got["coverage@10"] == 1.0
    assert got["coverage@1"] == 0.5
    assert got["coverage@2"] == 1.0  # {2, 3} from q = 1 plus {4, 1} from q = -1


def test_padding_never_ranked_and_top_k_padded_with_zero():
    q = torch.tensor([[1.0]])
    ranks, top = ranks_against_catalogue(q, HAND_ITEMS, torch.tensor([4]), chunk_size=2, k_max=6)
    assert ranks.tolist() == [3]  # padding (score 100) does not count
    assert sorted(top[0, :2].tolist()) == [2, 3] and top[0, 2:].tolist() == [1, 4, 0, 0]


def test_target_outside_top_k_and_coverage_by_hand():
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [-1.0, -1.0]])
    q = torch.tensor([[1.0, 0.1], [0.1, 1.0]])  # scores [1, .1, .55, -1.1] and [.1, 1, .55, -1.1]
    m = FullRankingMetrics(5, ks=(1, 2), chunk_size=3)
    assert m.update(q, items, torch.tensor([4, 3])).tolist() == [3, 1]
    got = m.compute()
    assert got["hr@2"] == 0.5 and got["hr@1"] == 0.0 and got["ndcg@1"] == 0.0 and got["mrr@1"] == 0.0
    assert got["coverage@1"] == pytest.approx(2 / 4)  # items 1 and 2
    assert got["coverage@2"] == pytest.approx(3 / 4)  # plus item 3; item 4 never shows


def test_exclude_seen_by_hand():
    q = torch.tensor([[1.0], [1.0]])
    targets = torch.tensor([1, 4])
    seen = torch.tensor([[0, 2, 1], [3, 4, 0]])  # left- and right-padded; the target itself listed too
    plain = FullRankingMetrics(5, ks=(1,), exclude_seen=False)
    assert plain.update(q, HAND_ITEMS, targets, seen=seen).tolist() == [2, 3]  # seen is ignored
    excl = FullRankingMetrics(5, ks=(1,), chunk_size=2, exclude_seen=True)
    # Row 0: item 2 removed, only item 3 beats item 1. Row 1: item 3 removed; item 4 stays rankable.
    assert excl.update(q, HAND_ITEMS, targets, seen=seen).tolist() == [1, 2]
    ranks, top = ranks_against_catalogue(q, HAND_ITEMS, targets, seen=seen, k_max=4)
    assert top.tolist() == [[3, 1, 4, 0], [2, 1, 4, 0]]


def random_seen(gen: torch.Generator, targets: torch.Tensor, n_items: int, width: int) -> torch.Tensor:
    """Random seen lists padded with 0 on the left or right, sometimes holding the target."""
    seen = torch.randint(1, n_items, (len(targets), width), generator=gen)
    seen[::3, 0] = targets[::3]
    for b in range(len(targets)):
        n_pad = int(torch.randint(0, width, (1,), generator=gen))
        if b % 2:
            seen[b, :n_pad] = 0
        else:
            seen[b, width - n_pad :] = 0
    return seen


@pytest.mark.parametrize("chunk", [1, 4, 9, 40, 100])
def test_exclude_seen_matches_reference_with_minus_inf(chunk):
    gen = torch.Generator().manual_seed(3)
    n_items, b, ks = 40, 24, (1, 5, 10)
    q, items = dyadic(gen, b, 3), dyadic(gen, n_items, 3)
    targets = torch.randint(1, n_items, (b,), generator=gen)
    seen = random_seen(gen, targets, n_items, 8)
    m = FullRankingMetrics(n_items, ks=ks, chunk_size=chunk, exclude_seen=True)
    got = m.update(q, items, targets, seen=seen)
    want = target_ranks(ref_scores(q, items, seen, targets), targets.numpy())
    np.testing.assert_array_equal(got.numpy(), want)
    assert (want != target_ranks(ref_scores(q, items), targets.numpy())).any()  # exclusion mattered
    assert_metrics_match(m.compute(), ranking_metrics(want, ks), ks)
    _, top = ranks_against_catalogue(q, items, targets, seen=seen, chunk_size=chunk, k_max=10)
    for row, s, t in zip(top.tolist(), seen.tolist(), targets.tolist(), strict=True):
        assert not set(row) & (set(s) - {0, t})


def numpy_coverage(scores: np.ndarray, ks) -> dict[int, float]:
    n_real = scores.shape[1] - 1
    order = np.argsort(-scores[:, 1:], axis=1) + 1
    out = {}
    for k in ks:
        top = order[:, :k]
        top = top[np.isfinite(np.take_along_axis(scores, top, axis=1))]  # rows with < K rankable items
        out[k] = len(np.unique(top)) / n_real
    return out


@pytest.mark.parametrize("exclude_seen", [False, True])
@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_coverage_matches_direct_top_k(exclude_seen, chunk):
    gen = torch.Generator().manual_seed(4)
    n_items, d, ks = 300, 8, (1, 10, 50)
    batches = []
    for b in (20, 13):
        q = torch.randn(b, d, generator=gen)
        t = torch.randint(1, n_items, (b,), generator=gen)
        batches.append((q, t, random_seen(gen, t, n_items, 30)))
    items = torch.randn(n_items, d, generator=gen) * torch.rand(n_items, 1, generator=gen) * 3
    scores = np.concatenate([ref_scores(q, items, s if exclude_seen else None, t) for q, t, s in batches])
    # Distinct scores with a clear gap at every K, so the top-K sets are unambiguous.
    srt = -np.sort(-scores[:, 1:], axis=1)
    for k in ks:
        gap = srt[:, k - 1] - srt[:, k]
        assert (gap[np.isfinite(srt[:, k])] > 1e-5).all()
    m = FullRankingMetrics(n_items, ks=ks, chunk_size=chunk, exclude_seen=exclude_seen)
    for q, t, s in batches:
        m.update(q, items, t, seen=s)
    got, want = m.compute(), numpy_coverage(scores, ks)
    assert 0 < want[1] < want[10] < want[50] < 1
    for k in ks:
        assert got[f"coverage@{k}"] == pytest.approx(want[k], abs=1e-12), k


def test_merge_of_halves_equals_whole():
    gen = torch.Generator().manual_seed(5)
    n_items, ks = 60, (1, 5, 20)
    items = dyadic(gen, n_items, 4)
    batches = [(dyadic(gen, 9, 4), torch.randint(1, n_items, (9,), generator=gen)) for _ in range(4)]
    whole, left, right = (FullRankingMetrics(n_items, ks=ks, chunk_size=16) for _ in range(3))
    for i, (q, t) in enumerate(batches):
        whole.update(q, items, t)
        (left if i < 2 else right).update(q, items, t)
    via_state = FullRankingMetrics(n_items, ks=ks)
    via_state.merge(left.state())
    left.merge(right)
    want = whole.compute()
    assert want["coverage@1"] < want["coverage@5"] < 1.0
    assert via_state.compute()["n"] == 18
    got = left.compute()
    assert got["n"] == 36
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    torch.testing.assert_close(left.state()["covered"], whole.state()["covered"], rtol=0, atol=0)
    with pytest.raises(ValueError):
        left.merge(FullRankingMetrics(n_items + 1, ks=ks))
    with pytest.raises(ValueError):
        left.merge(FullRankingMetrics(n_items, ks=(1, 5, 21)))
    left.reset()
    assert left.compute()["n"] == 0 and math.isnan(left.compute()["hr@1"])


class LargestOutput(TorchFunctionMode):
    """Records the largest tensor any torch call returns."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, tuple) else (out,):
            if isinstance(o, torch.Tensor):
                self.numel = max(self.numel, o.numel())
        return out


def test_large_catalogue_chunked_equals_unchunked_without_full_score_matrix():
    gen = torch.Generator().manual_seed(6)
    n_items, d, b, chunk, ks = 200_000, 32, 64, 16384, (10, 20, 100)
    # q on a 2^-8 grid in [-1, 1], items on a 2^-12 grid in [-1/2, 1/2]: products on a 2^-20 grid and
    # |partial sums| <= 16, so every score is exact in float32 (24 bits) and ties are rare.
    q, items = dyadic(gen, b, d, scale=256), dyadic(gen, n_items, d, scale=4096) / 2
    targets = torch.randint(1, n_items, (b,), generator=gen)
    full = q @ items.T
    full[:, 0] = -math.inf
    top = full.topk(max(ks) + 1, dim=1).values
    for k in ks:
        assert (top[:, k - 1] > top[:, k]).all()  # no tie at any K boundary: top-K sets are unique
    t = full.gather(1, targets[:, None])
    want_ranks = (full >= t).sum(1) - 1
    del full

    results = []
    for chunk_size in (chunk, n_items):
        m = FullRankingMetrics(n_items, ks=ks, chunk_size=chunk_size)
        with LargestOutput() as probe:
            ranks = m.update(q, items, targets)
        results.append((ranks, m.compute(), probe.numel))
    (r_chunk, m_chunk, biggest), (r_full, m_full, biggest_full) = results
    torch.testing.assert_close(r_chunk, want_ranks, rtol=0, atol=0)
    torch.testing.assert_close(r_full, want_ranks, rtol=0, atol=0)
    assert m_chunk == m_full
    assert m_chunk["coverage@100"] > m_chunk["coverage@10"] > 0
    assert biggest <= b * chunk < b * n_items <= biggest_full  # the probe does see a full score matrix


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(7)
    n_items, b, ks = 5000, 48, (10, 100)
    q, items = dyadic(gen, b, 16, scale=16), dyadic(gen, n_items, 16, scale=16)
    targets = torch.randint(1, n_items, (b,), generator=gen)
    seen = random_seen(gen, targets, n_items, 20)
    cpu, gpu = (FullRankingMetrics(n_items, ks=ks, chunk_size=999, exclude_seen=True) for _ in range(2))
    want = cpu.update(q, items, targets, seen)
    got = gpu.update(q.cuda().bfloat16(), items.cuda(), targets.cuda(), seen.cuda())
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0)
    c, g = cpu.compute(), gpu.compute()
    for key in (key for key in c if not key.startswith("coverage")):  # dyadic ties: top-K sets may differ
        assert g[key] == pytest.approx(c[key], rel=1e-12), key


def test_ranks_are_float32_inside_a_bf16_autocast_region():
    """Lightning's bf16-mixed evaluation runs under autocast: ranks (seen items excluded) stay exact."""
    gen = torch.Generator().manual_seed(3)
    n_items, b = 400, 32
    q, items = torch.randn(b, 16, generator=gen), torch.randn(n_items, 16, generator=gen)
    targets = torch.randint(1, n_items, (b,), generator=gen)
    seen = random_seen(gen, targets, n_items, 10)
    want = ranks_against_catalogue(q, items, targets, seen, chunk_size=97, k_max=10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ranks_against_catalogue(q, items, targets, seen, chunk_size=97, k_max=10)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
