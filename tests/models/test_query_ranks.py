"""Per-query ranks: their metrics average to the aggregate ones, the file round-trips, and the paired
bootstrap of two models tells a real lead from noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shopformer.errors import DataError
from shopformer.models.query_ranks import QueryRanks, paired_difference, paired_differences
from shopformer.models.ranking_metrics import FullRankingMetrics


def ranks_of(rank, *, n=None, seed=0) -> QueryRanks:
    rank = np.asarray(rank)
    n = len(rank) if n is None else n
    rng = np.random.default_rng(seed)
    position = rng.permutation(10 * n)[:n]  # any order: QueryRanks sorts by position
    return QueryRanks.of(position, np.arange(n), np.arange(n) % 7 + 1, rank)


@pytest.mark.parametrize("metric", ["ndcg@10", "hr@10", "mrr@10", "ndcg@20", "hr@100"])
def test_per_query_values_average_to_the_aggregate_metric(metric):
    gen = torch.Generator().manual_seed(3)
    n_items, batch = 400, 256
    accumulator = FullRankingMetrics(n_items, ks=(10, 20, 100))
    queries, items = torch.randn(batch, 8, generator=gen), torch.randn(n_items, 8, generator=gen)
    targets = torch.randint(1, n_items, (batch,), generator=gen)
    ranks = accumulator.update(queries, items, targets)
    per_query = QueryRanks.of(np.arange(batch), np.arange(batch), targets.numpy(), ranks.numpy())
    assert per_query.values(metric).mean() == pytest.approx(accumulator.compute()[metric], abs=1e-12)


def test_the_file_round_trips_sorted_by_position(tmp_path):
    ranks = QueryRanks.of([30, 10, 20], [3, 1, 2], [7, 5, 6], [4, 0, 11])
    assert ranks.position.tolist() == [10, 20, 30] and ranks.rank.tolist() == [0, 11, 4]
    back = QueryRanks.read(ranks.write(tmp_path / "eval" / "test_ranks.parquet"))
    for column in ("position", "sequence", "target", "rank"):
        assert getattr(back, column).tolist() == getattr(ranks, column).tolist()


def test_a_file_that_is_not_one_is_refused_naming_it(tmp_path):
    bad = tmp_path / "ranks.parquet"
    bad.write_text("position,rank\n1,2\n")
    with pytest.raises(DataError, match="ranks.parquet: not a per-query ranks file"):
        QueryRanks.read(bad)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"position": [1], "rank": [0]}), bad)
    with pytest.raises(DataError, match="without column.s. sequence, target"):
        QueryRanks.read(bad)


def test_a_model_against_itself_differs_by_exactly_zero():
    ranks = ranks_of(np.random.default_rng(1).integers(0, 50, 500))
    d = paired_difference(ranks, ranks, "ndcg@10", resamples=200)
    assert (d.delta, d.low, d.high, d.sd) == (0.0, 0.0, 0.0, 0.0)


def test_a_clear_lead_has_an_interval_above_zero_and_the_delta_is_the_metrics_difference():
    rng = np.random.default_rng(2)
    worse = ranks_of(rng.integers(0, 40, 2000))
    better = ranks_of(np.where(rng.random(2000) < 0.5, 0, worse.rank))  # same queries, half now first
    d = paired_differences(better, worse, ["ndcg@10", "hr@10"], resamples=300)
    for metric, diff in d.items():
        assert diff.delta == pytest.approx(better.values(metric).mean() - worse.values(metric).mean())
        assert 0 < diff.low < diff.delta < diff.high


def test_two_equally_good_models_get_intervals_that_cover_zero_about_95_percent_of_the_time():
    covered = 0
    for seed in range(60):
        rng = np.random.default_rng(100 + seed)
        a, b = ranks_of(rng.integers(0, 30, 800)), ranks_of(rng.integers(0, 30, 800))
        d = paired_difference(a, b, "hr@10", resamples=300, seed=seed)
        covered += d.low <= 0.0 <= d.high
    assert 0.85 <= covered / 60 <= 1.0


def test_queries_of_one_sequence_are_resampled_together():
    """Two identical queries per sequence: resampled whole, the spread is that of the sequences (wider
    than if the 2n queries were independent)."""
    rng = np.random.default_rng(4)
    base = rng.integers(0, 20, 400)
    rank_a, rank_b = np.repeat(base, 2), np.repeat(rng.integers(0, 20, 400), 2)

    def make(rank, sequence):
        return QueryRanks.of(np.arange(800), sequence, np.ones(800), rank)

    paired_seq = np.repeat(np.arange(400), 2)
    together = paired_difference(make(rank_a, paired_seq), make(rank_b, paired_seq), "hr@10", 400)
    apart = paired_difference(make(rank_a, np.arange(800)), make(rank_b, np.arange(800)), "hr@10", 400)
    assert together.sd > 1.25 * apart.sd


def test_runs_on_different_queries_or_targets_are_refused():
    a = QueryRanks.of([1, 2, 3], [1, 2, 3], [5, 6, 7], [0, 1, 2])
    with pytest.raises(DataError, match="ranked different queries .3 and 2, 2 in common"):
        paired_difference(a, QueryRanks.of([1, 2], [1, 2], [5, 6], [0, 1]))
    with pytest.raises(DataError, match="targets differ at 1 queries .first: event row 3, item 7 vs 9"):
        paired_difference(a, QueryRanks.of([1, 2, 3], [1, 2, 3], [5, 6, 9], [0, 1, 2]))
    with pytest.raises(ValueError, match="metric must be one of"):
        paired_difference(a, a, "precision@10")
