"""Reward models for the direct method: hand-checked shrinkage, fallbacks, logistic cross-fitting."""

from __future__ import annotations

import numpy as np
import pytest

from shopformer.errors import ConfigError, DataError
from shopformer.offpolicy.estimators import estimate
from shopformer.offpolicy.feedback import BanditFeedback
from shopformer.offpolicy.reward_model import EmpiricalBayesRewardModel, LogisticRewardModel, expected_reward
from tests.offpolicy.test_estimators import synthetic_log


def test_binary_rewards_shrink_by_the_beta_binomial_moment_prior():
    # position 0: item "a" 3 clicks of 4, item "b" 1 of 4. mu = 0.5; sum n (ybar - mu)^2 = 4 * 0.0625 * 2
    # = 0.5; tau^2 = (0.5 - (2 - 1) * 0.5 * 0.5) / (8 - (16 + 16) / 8) = 0.0625; m = 0.25 / 0.0625 - 1 = 3
    items = np.array(["a"] * 4 + ["b"] * 4)
    rewards = np.array([1, 1, 1, 0, 1, 0, 0, 0], dtype=float)
    model = EmpiricalBayesRewardModel().fit(items, np.zeros(8, dtype=int), rewards)
    assert model.prior_strength_[0] == pytest.approx(3.0)
    q = model.predict(np.array(["a", "b"]), np.array([0, 0]))
    assert q == pytest.approx([(3 + 3 * 0.5) / (4 + 3), (1 + 3 * 0.5) / (4 + 3)])


def test_revenue_shrinks_by_the_normal_moment_prior():
    # item "a" earns [2, 4], "b" [0, 2]: mu = 2, pooled within variance ((1 + 1) + (1 + 1)) / (4 - 2) = 2,
    # sum n (ybar - mu)^2 = 2 + 2 = 4, tau^2 = (4 - 1 * 2) / (4 - 8 / 4) = 1, m = 2 / 1 = 2
    model = EmpiricalBayesRewardModel().fit(
        np.array([1, 1, 2, 2]), np.zeros(4, dtype=int), np.array([2.0, 4.0, 0.0, 2.0])
    )
    assert model.prior_strength_[0] == pytest.approx(2.0)
    assert model.predict(np.array([1, 2]), np.array([0, 0])) == pytest.approx(
        [(6 + 2 * 2) / 4, (2 + 2 * 2) / 4]
    )


def test_items_with_no_real_difference_all_get_the_position_mean():
    rng = np.random.default_rng(0)
    items, positions = rng.integers(0, 20, 5_000), rng.integers(0, 2, 5_000)
    rewards = (rng.random(5_000) < np.where(positions == 0, 0.3, 0.1)).astype(float)
    model = EmpiricalBayesRewardModel().fit(items, positions, rewards)
    q = model.predict(items, positions)
    spread = [np.ptp(q[positions == p]) for p in (0, 1)]
    raw_spread = [
        np.ptp([rewards[(positions == p) & (items == i)].mean() for i in range(20)]) for p in (0, 1)
    ]
    assert all(s < 0.5 * r for s, r in zip(spread, raw_spread, strict=True))


def test_unseen_items_get_the_position_mean_and_unseen_positions_the_overall_mean():
    items = np.array([1, 1, 2, 2, 1, 2])
    positions = np.array([0, 0, 0, 0, 1, 1])
    rewards = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    model = EmpiricalBayesRewardModel().fit(items, positions, rewards)
    q = model.predict(np.array([99, 99, 1]), np.array([0, 1, 7]))
    assert q == pytest.approx([3 / 4, 1 / 2, 4 / 6])


def test_the_reward_model_gives_a_direct_method_close_to_the_truth():
    log = synthetic_log(np.random.default_rng(1), n_slates=20_000, n_contexts=1, rates=(0.1, 0.5))
    fb = log["feedback"]
    model = EmpiricalBayesRewardModel().fit(fb.item, fb.position, fb.reward)
    # every item is a candidate at every logged slot: the sparse (row, item, prob) list the target gives
    n_items = 8
    row = np.repeat(np.arange(fb.n_rows), n_items)
    item = np.tile(np.arange(n_items), fb.n_rows)
    prob = log["action_dist"][row, item, fb.position[row]]
    dm_value = expected_reward(model, row=row, item=item, prob=prob, position=fb.position)
    assert dm_value[:2] == pytest.approx(
        [
            np.sum(prob[:8] * model.predict(item[:8], np.zeros(8, dtype=int))),
            np.sum(prob[8:16] * model.predict(item[8:16], np.ones(8, dtype=int))),
        ]
    )
    fitted = BanditFeedback(
        reward=fb.reward,
        position=fb.position,
        pscore=fb.pscore,
        slate_id=fb.slate_id,
        target_pscore=fb.target_pscore,
        q_hat=model.predict(fb.item, fb.position),
        dm_value=dm_value,
    )
    assert estimate(fitted, "dm") == pytest.approx(log["truth"], abs=0.01)
    assert estimate(fitted, "dr") == pytest.approx(log["truth"], abs=0.02)


def test_the_logistic_model_uses_context_features_and_cross_fits():
    rng = np.random.default_rng(2)
    n = 4_000
    features = rng.normal(size=(n, 2))
    items, positions = rng.integers(0, 5, n), rng.integers(0, 3, n)
    truth = 1 / (1 + np.exp(-(1.5 * features[:, 0] + 0.3 * items - 0.5 * positions - 1)))
    rewards = (rng.random(n) < truth).astype(float)
    groups = np.arange(n) // 3
    model = LogisticRewardModel(n_folds=2, seed=0).fit(items, positions, rewards, features, groups=groups)
    held_out = model.predict(items, positions, features, rows=np.arange(n))
    assert np.corrcoef(held_out, truth)[0, 1] > 0.9
    fold = model.fold_
    assert (fold[groups == 5] == fold[15]).all()  # a group stays in one fold
    first = np.flatnonzero(fold == 0)[:10]  # rows of fold 0 are answered by model 0, which never saw them
    design = model._design(items[first], positions[first], features[first])
    assert held_out[first] == pytest.approx(model.models_[0].predict_proba(design)[:, 1])
    pooled = model.predict(items[first], positions[first], features[first])
    assert not np.allclose(pooled, held_out[first])


def test_the_logistic_model_refuses_non_binary_rewards_and_missing_features():
    with pytest.raises(DataError, match=r"needs 0/1 rewards; 1 of 3 rows are not, e\.g\. 2\.5 at row 1"):
        LogisticRewardModel().fit(np.array([1, 2, 3]), np.zeros(3, dtype=int), np.array([0.0, 2.5, 1.0]))
    model = LogisticRewardModel().fit(
        np.array([1, 2, 3, 1]), np.zeros(4, dtype=int), np.array([0.0, 1.0, 1.0, 0.0]), np.ones((4, 2))
    )
    with pytest.raises(ConfigError, match="needs them too"):
        model.predict(np.array([1]), np.array([0]))
    with pytest.raises(ConfigError, match="fit"):
        EmpiricalBayesRewardModel().predict(np.array([1]), np.array([0]))
