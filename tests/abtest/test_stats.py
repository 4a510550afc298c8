"""The readout's statistics against scipy, published examples and hand calculations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from shopformer.abtest.cuped import cuped
from shopformer.abtest.stats import (
    Summary,
    bootstrap,
    holm,
    mean_interval,
    sample_ratio,
    two_proportions,
    wald_interval,
    welch,
    wilson,
)


def test_wilson_matches_scipy():
    for k, n in [(10, 100), (0, 50), (3, 3000), (50, 50)]:
        ours = wilson(k, n, 0.05)
        theirs = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert ours.estimate == pytest.approx(k / n)
        assert (ours.low, ours.high) == pytest.approx((theirs.low, theirs.high), abs=1e-12)


def test_welch_matches_scipy_ttest_ind():
    rng = np.random.default_rng(3)
    a, b = rng.lognormal(1, 1, 40), rng.lognormal(1.3, 0.5, 25)
    ours = welch(Summary.of(a), Summary.of(b), 0.05)
    theirs = stats.ttest_ind(b, a, equal_var=False)
    ci = theirs.confidence_interval(0.95)
    assert ours.diff == pytest.approx(b.mean() - a.mean())
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-10)
    assert (ours.low, ours.high) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_mean_interval_matches_scipy():
    x = np.array([0.0, 0, 0, 12.5, 3.1, 0, 40.0])
    ours = mean_interval(Summary.of(x), 0.1)
    lo, hi = stats.t.interval(0.9, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert (ours.low, ours.high) == pytest.approx((lo, hi))


def test_two_proportion_z_test_by_hand():
    # 45 of 1,000 against 60 of 1,000: pooled rate 105/2000 = 0.0525,
    # se0 = sqrt(0.0525 * 0.9475 * (1/1000 + 1/1000)) = 0.0099743, z = 0.015 / se0 = 1.50386
    d = two_proportions(45, 1000, 60, 1000)
    se0 = math.sqrt(0.0525 * 0.9475 * 0.002)
    assert se0 == pytest.approx(0.0099743, abs=1e-7)
    assert d.diff == pytest.approx(0.015)
    assert d.p_value == pytest.approx(2 * (1 - stats.norm.cdf(0.015 / se0)))
    assert d.p_value == pytest.approx(0.13262, abs=1e-4)
    assert d.relative == pytest.approx(60 / 45 - 1)
    assert d.relative_low < d.relative < d.relative_high


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17, example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339
    d = two_proportions(48, 80, 56, 70)
    assert d.diff == pytest.approx(0.2)
    assert (d.low, d.high) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    wald = wald_interval(48, 80, 56, 70)
    assert wald.estimate == pytest.approx(0.2)


def test_holm_adjusts_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([0.4, 0.6]) == pytest.approx([0.8, 0.8])


def test_bootstrap_agrees_with_welch_on_a_large_sample():
    rng = np.random.default_rng(0)
    a = np.where(rng.random(4000) < 0.05, rng.lognormal(3, 1, 4000), 0.0)
    b = np.where(rng.random(4000) < 0.06, rng.lognormal(3, 1, 4000), 0.0)
    boot = bootstrap(a, b, 2000, 0.05, seed=1)
    w = welch(Summary.of(a), Summary.of(b), 0.05)
    assert boot.diff == pytest.approx(w.diff)
    width = w.high - w.low
    assert abs(boot.low - w.low) < 0.1 * width and abs(boot.high - w.high) < 0.1 * width
    assert boot.p_value == pytest.approx(w.p_value, abs=0.03)


def test_sample_ratio_flags_52_48_on_100k_units_not_a_fair_split():
    skewed = sample_ratio(["A", "B"], [52_000, 48_000], [50, 50])
    assert skewed.mismatch and skewed.p_value < 1e-30
    assert skewed.expected == (50_000.0, 50_000.0)
    fair = sample_ratio(["A", "B"], [50_100, 49_900], [50, 50])
    assert not fair.mismatch and fair.p_value > 0.5
    planned = sample_ratio(["A", "B"], [60_150, 39_850], [60, 40])
    assert not planned.mismatch


def test_cuped_theta_and_variance_reduction():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(20_000)
    y = 2.0 + 0.7 * x + math.sqrt(1 - 0.49) * rng.standard_normal(20_000)
    result = cuped(y, x)
    assert result.theta == pytest.approx(np.cov(y, x)[0, 1] / np.var(x, ddof=1))
    assert result.variance_reduction == pytest.approx(0.49, abs=0.02)
    assert result.adjusted.mean() == pytest.approx(y.mean())


def test_cuped_keeps_units_without_a_covariate_unadjusted():
    rng = np.random.default_rng(6)
    x = rng.standard_normal(1000)
    y = x + rng.standard_normal(1000)
    x[:100] = np.nan
    result = cuped(y, x)
    assert (result.with_covariate, result.without_covariate) == (900, 100)
    assert np.allclose(result.adjusted[:100], y[:100])
    assert not np.allclose(result.adjusted[100:], y[100:])
    none = cuped(y, np.full(1000, np.nan))
    assert none.variance_reduction == 0.0 and np.array_equal(none.adjusted, y)
