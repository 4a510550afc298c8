"""Paired bootstrap of a metric difference, resampling groups of rows together."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shopformer.models.bootstrap import group_rows, paired_bootstrap, resample_rows


def _mean_of(values, rows):
    return float(np.mean(values[rows]))


def test_identical_models_differ_by_exactly_zero():
    values = np.random.default_rng(0).random(50)
    d = paired_bootstrap(_mean_of, values, values.copy(), np.arange(50), resamples=200)
    assert (d.delta, d.sd, d.low, d.high, d.resamples) == (0.0, 0.0, 0.0, 0.0, 200)


def test_a_clear_lead_has_an_interval_above_zero_and_a_constant_shift_has_no_spread():
    rng = np.random.default_rng(1)
    values = rng.random(400)
    shifted = paired_bootstrap(_mean_of, values + 0.1, values, np.arange(400), resamples=300)
    assert shifted.delta == pytest.approx(0.1) and shifted.sd == pytest.approx(0.0, abs=1e-12)
    noisy = paired_bootstrap(_mean_of, values + 0.1, rng.random(400), np.arange(400), resamples=300)
    assert 0.0 < noisy.low < noisy.delta < noisy.high and noisy.sd > 0.01


def test_rows_of_one_group_are_drawn_together():
    groups = np.repeat(np.arange(30), 3)  # 30 groups of 3 rows
    shuffled = np.random.default_rng(2).permutation(groups)
    order, bounds = group_rows(shuffled)
    rng = np.random.default_rng(3)
    for _ in range(20):
        rows = resample_rows(order, bounds, rng)
        assert len(rows) == 90
        counts = np.bincount(shuffled[rows], minlength=30)
        assert np.all(counts % 3 == 0) and counts.sum() == 90


def test_grouping_widens_the_interval_of_correlated_rows():
    rng = np.random.default_rng(4)
    group_effect = np.repeat(rng.normal(size=40), 10)  # rows of a group move together
    a, b = group_effect + 0.01 * rng.normal(size=400), np.zeros(400)
    by_row = paired_bootstrap(_mean_of, a, b, np.arange(400), resamples=300)
    by_group = paired_bootstrap(_mean_of, a, b, np.repeat(np.arange(40), 10), resamples=300)
    assert by_group.sd > 2 * by_row.sd


def test_undefined_resamples_are_skipped_and_bad_groups_refused():
    calls = iter(range(1000))

    def sometimes_nan(values, rows):
        return math.nan if next(calls) % 4 == 2 else float(values[rows].sum())

    d = paired_bootstrap(sometimes_nan, np.ones(10), np.zeros(10), np.arange(10), resamples=100)
    assert 0 < d.resamples < 100
    with pytest.raises(ValueError, match="one group id per row"):
        paired_bootstrap(_mean_of, np.ones(3), np.ones(3), np.array([]))


def test_mean_of_independent_differences_narrows_by_root_n():
    from shopformer.models.bootstrap import Difference, mean_difference

    folds = [Difference(delta, 0.01, delta - 0.02, delta + 0.02, 1000) for delta in (0.01, 0.02, 0.03, 0.04)]
    mean = mean_difference(folds)
    assert mean.delta == pytest.approx(0.025)
    assert mean.sd == pytest.approx(0.01 / 2)  # four independent folds: half the sd of one
    assert (mean.low, mean.high) == pytest.approx((0.025 - 1.96 * 0.005, 0.025 + 1.96 * 0.005))
    with pytest.raises(ValueError):
        mean_difference([])
