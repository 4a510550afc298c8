"""The readout on simulated tests with known truth: A/A size, planted-lift coverage, CUPED."""

from __future__ import annotations

import numpy as np
import pytest

from shopformer.abtest.analysis import analyse
from shopformer.abtest.simulate import Scenario, simulate


def comparison(readout, metric):
    (c,) = [c for c in readout.comparisons if c.metric == metric]
    return c


def aa_rejections(sims: int, units: int) -> dict[str, float]:
    hits = {"conversion": 0, "revenue_per_visitor": 0}
    for seed in range(sims):
        readout = analyse(simulate(Scenario(units=units), seed=seed))
        for metric in hits:
            hits[metric] += comparison(readout, metric).difference.p_value < 0.05
    return {metric: n / sims for metric, n in hits.items()}


def test_aa_tests_reject_at_about_alpha():
    rates = aa_rejections(150, 4000)
    assert 0.01 <= rates["conversion"] <= 0.10, rates
    assert 0.01 <= rates["revenue_per_visitor"] <= 0.10, rates


@pytest.mark.slow
def test_aa_tests_reject_at_alpha_over_500_simulations():
    rates = aa_rejections(500, 10_000)
    assert 0.03 <= rates["conversion"] <= 0.07, rates


def test_planted_conversion_lift_is_covered_about_95_percent():
    scenario = Scenario(units=6000, lift=0.25)
    covered, significant = 0, 0
    for seed in range(200):
        d = comparison(analyse(simulate(scenario, seed=seed)), "conversion").difference
        covered += d.low <= scenario.true_difference <= d.high
        significant += d.p_value < 0.05
    assert 0.90 <= covered / 200 <= 0.99
    assert significant > 10  # and the lift is there to be found


def test_cuped_narrows_the_interval_and_keeps_the_difference():
    scenario = Scenario(units=6000, lift=0.1, revenue_lift=0.1, covariate_corr=0.7, covariate_missing=0.1)
    plain, adjusted, ratio, reduction = [], [], [], []
    for seed in range(60):
        readout = analyse(simulate(scenario, seed=seed))
        c = comparison(readout, "revenue_per_visitor")
        plain.append(c.difference.diff)
        adjusted.append(c.cuped.diff)
        ratio.append((c.cuped.high - c.cuped.low) / (c.difference.high - c.difference.low))
        reduction.append(readout.cuped["revenue_per_visitor_variance_reduction"])
    assert np.mean(ratio) < 0.85 and max(ratio) < 1.0
    assert 0.3 < np.mean(reduction) < 0.6
    # the same expected difference: both means sit on the truth, within their noise
    truth = scenario.true_revenue_difference
    for estimates in (adjusted, plain):
        assert abs(np.mean(estimates) - truth) < 3 * np.std(estimates) / np.sqrt(len(estimates))
    assert abs(np.mean(adjusted) - np.mean(plain)) < 2 * np.std(plain) / np.sqrt(len(plain))
    # and it is closer to each run's average than the plain estimate is (lower variance)
    assert np.std(adjusted) < np.std(plain)
    assert readout.notes == [] and readout.cuped["units_without_covariate"] > 0


def test_underpowered_tests_get_a_warning_and_srm_a_loud_one():
    small = analyse(simulate(Scenario(units=2000, lift=0.04), seed=2))
    assert any("underpowered" in w and "conversion" in w for w in small.warnings)
    skewed = simulate(Scenario(units=20_000, shares=(0.53, 0.47)), seed=1)
    readout = analyse(skewed, split="50/50")
    assert readout.srm.mismatch and readout.warnings[0].startswith("SAMPLE RATIO MISMATCH")
    assert not analyse(skewed, split="53/47").srm.mismatch


def test_three_arms_are_each_compared_with_the_control_and_holm_adjusted():
    readout = analyse(simulate(Scenario(units=9000, shares=(1, 1, 1)), seed=4), control="A")
    conv = [c for c in readout.comparisons if c.metric == "conversion"]
    assert [c.arm for c in conv] == ["B", "C"]
    assert all(c.p_holm >= c.difference.p_value for c in conv)
    assert any("Holm" in note for note in readout.notes)
