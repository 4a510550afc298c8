"""Bootstrap intervals, weight diagnostics and their warnings, and the evaluate/format_table report."""

from __future__ import annotations

import numpy as np
import pytest

from shopformer.errors import ConfigError, DataError
from shopformer.offpolicy.estimators import make_estimator
from shopformer.offpolicy.feedback import BanditFeedback
from shopformer.offpolicy.intervals import (
    bootstrap_interval,
    bootstrap_values,
    effective_sample_size,
    support_warning,
    weight_diagnostics,
    weight_warning,
)
from shopformer.offpolicy.report import evaluate, format_table
from tests.offpolicy.test_estimators import hand_log, synthetic_log


def test_ess_formula():
    assert effective_sample_size(np.array([1.0, 1.0, 2.0])) == pytest.approx((1 + 1 + 2) ** 2 / (1 + 1 + 4))
    assert effective_sample_size(np.full(50, 3.7)) == pytest.approx(50)
    assert effective_sample_size(np.array([0.0, 0.0])) == 0.0


def test_diagnostics_name_the_top_weights_and_their_share():
    weights = np.array([1.0, 8.0, 2.0, 4.0, 1.0, 1.0, 16.0])
    rewards = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    d = weight_diagnostics(weights, rewards)
    assert d.top_weights == (16.0, 8.0, 4.0, 2.0, 1.0)
    total = 1 + 8 + 0 + 4 + 1 + 1 + 16
    assert d.top_share == pytest.approx((16 + 8 + 4 + 0 + 1) / total)
    assert d.cumulative[0] == pytest.approx(16 / total)
    assert d.n == 7 and d.ess == pytest.approx(33**2 / (1 + 64 + 4 + 16 + 1 + 1 + 256))


def test_a_log_dominated_by_one_weight_warns_and_a_uniform_one_does_not():
    rng = np.random.default_rng(0)
    rewards = (rng.random(10_000) < 0.3).astype(float)
    weights = np.full(10_000, 0.01)
    weights[[5, 17]] = 400.0
    rewards[[5, 17]] = 1.0
    warning = weight_warning(weight_diagnostics(weights, rewards))
    assert warning is not None and warning.startswith("rests on 2 large weights (")
    # ESS = (2 * 400 + 9_998 * 0.01) ** 2 / (2 * 400**2 + 9_998 * 0.01**2) = 2.53
    assert "of the estimate); ESS 3 of 10,000 rows" in warning
    assert weight_warning(weight_diagnostics(np.ones(10_000), rewards)) is None


def test_few_rows_or_few_effective_rows_warn_by_ess():
    assert (
        weight_warning(weight_diagnostics(np.ones(20), np.zeros(20)))
        == "rests on few weights: ESS 20 of 20 rows"
    )
    spread = np.random.default_rng(1).lognormal(sigma=3.0, size=5_000)
    assert "ESS" in (weight_warning(weight_diagnostics(spread, np.ones(5_000))) or "")


def test_support_deficiency_is_reported_for_ips_type_estimates_only():
    assert support_warning(0.12) == (
        "the target puts 12 % of its mass on items the logs never show: IPS-type estimates cannot see them"
    )
    assert support_warning(0.001) is None and support_warning(None) is None
    log = synthetic_log(np.random.default_rng(2), n_slates=2_000)
    by_name = {e.name: e for e in evaluate(log["feedback"], n_bootstrap=50, unsupported_mass=0.12)}
    assert "12 % of its mass" in (by_name["ipw"].warning or "")
    assert by_name["dr"].warning is None and by_name["dm"].warning is None


def test_the_bootstrap_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    ipw, dr = make_estimator("ipw"), make_estimator("dr")
    covered = []
    for _ in range(200):
        log = synthetic_log(rng, n_slates=300, problem=6, target_sharpness=1.0)
        values = bootstrap_values(
            log["feedback"], [ipw, dr], n_bootstrap=400, seed=int(rng.integers(1 << 31))
        )
        low, high = np.quantile(values, [0.025, 0.975], axis=0)
        covered.append((low <= log["truth"]) & (log["truth"] <= high))
    coverage = np.mean(covered, axis=0)
    assert ((coverage >= 0.88) & (coverage <= 0.99)).all(), coverage


def test_the_bootstrap_resamples_whole_slates():
    # Both positions of a slate share its reward, so the slate bootstrap's spread is the spread of slate
    # means (a row bootstrap would treat the 2 rows as independent and come out ~sqrt(2) too narrow).
    rng = np.random.default_rng(3)
    slate_reward = (rng.random(2_000) < 0.4).astype(float)
    fb = BanditFeedback(
        reward=np.repeat(slate_reward, 2),
        position=np.tile([0, 1], 2_000),
        pscore=np.full(4_000, 0.5),
        slate_id=np.repeat(np.arange(2_000), 2),
        target_pscore=np.full(4_000, 0.5),
    )
    values = bootstrap_values(fb, [make_estimator("ipw")], n_bootstrap=2_000, seed=0, max_cells=50_000)[:, 0]
    assert values.std() == pytest.approx(slate_reward.std() / np.sqrt(2_000), rel=0.08)


def test_the_bootstrap_is_seeded_and_self_normalised_estimators_renormalise():
    fb = synthetic_log(np.random.default_rng(4))["feedback"]
    snipw = make_estimator("snipw")
    assert bootstrap_interval(fb, snipw, seed=3) == bootstrap_interval(fb, snipw, seed=3)
    assert bootstrap_interval(fb, snipw, seed=3) != bootstrap_interval(fb, snipw, seed=4)
    # every resample of a target == logging log is the resample's own on-policy mean, so within [0, 1]
    same = BanditFeedback(
        reward=fb.reward,
        position=fb.position,
        pscore=fb.pscore,
        slate_id=fb.slate_id,
        target_pscore=fb.pscore,
    )
    values = bootstrap_values(same, [snipw], n_bootstrap=200)
    assert ((values >= 0) & (values <= 1)).all()


def test_evaluate_reports_every_estimator_with_its_interval_and_diagnostics():
    log = synthetic_log(np.random.default_rng(5), n_slates=1_000)
    estimates = evaluate(log["feedback"], n_bootstrap=200, switch_lambda=5.0)
    assert [e.name for e in estimates] == ["ipw", "clipped-ipw", "snipw", "dm", "dr", "sndr", "switch-dr"]
    for e in estimates:
        assert e.low <= e.value <= e.high, e
    dm = estimates[3]
    assert dm.ess is None and dm.top_weights == () and dm.low == pytest.approx(dm.value, abs=0.05)
    ipw = estimates[0]
    assert ipw.ess == pytest.approx(effective_sample_size(log["feedback"].importance_weight))
    assert len(ipw.top_weights) == 5 and ipw.top_weights[0] == log["feedback"].importance_weight.max()


def test_format_table_is_readable_and_shows_errors_against_a_truth():
    estimates = evaluate(hand_log(), ("ipw", "dm"), n_bootstrap=100, seed=1)
    table = format_table(estimates, truth=0.5)
    lines = table.splitlines()
    assert lines[0] == "truth: 0.5"
    assert lines[1].split()[:4] == ["estimator", "value", "95", "%"]
    assert "rel. error" in lines[1] and "covers" in lines[1]
    assert lines[3].startswith("ipw [1]") and "0.75" in lines[3] and "+50.0 %" in lines[3]
    assert lines[4].startswith("dm") and "-25.0 %" in lines[4]
    assert lines[5].startswith("[1] ipw: rests on")
    assert "rel. error" not in format_table(estimates)


def test_bad_report_arguments_are_user_errors():
    with pytest.raises(ConfigError, match="alpha"):
        evaluate(hand_log(), ("ipw",), alpha=1.5)
    with pytest.raises(ConfigError, match="unknown estimator"):
        evaluate(hand_log(), ("ipw", "magic"))
    with pytest.raises(DataError, match="dr needs"):
        evaluate(hand_log(q_hat=None), ("ipw", "dr"))
