"""The estimators: hand-checked formulas, OBP's dense formulas, and their textbook properties."""

from __future__ import annotations

import numpy as np
import pytest

from shopformer.errors import ConfigError, DataError
from shopformer.offpolicy.estimators import ESTIMATORS, estimate, make_estimator
from shopformer.offpolicy.feedback import BanditFeedback


def hand_log(**overrides: object) -> BanditFeedback:
    """Two requests of two positions; w = target_pscore / pscore = [0.5, 2, 2, 0.5]."""
    columns = dict(
        slate_id=["a", "a", "b", "b"],
        position=[0, 1, 0, 1],
        reward=[1.0, 1.0, 0.0, 1.0],
        pscore=[0.5, 0.25, 0.5, 0.2],
        target_pscore=[0.25, 0.5, 1.0, 0.1],
        q_hat=[0.6, 0.2, 0.4, 0.3],
        dm_value=[0.5, 0.3, 0.45, 0.25],
        slate_pscore=[0.1, 0.1, 0.05, 0.05],
        target_slate_pscore=[0.2, 0.2, 0.01, 0.01],
    )
    return BanditFeedback(**(columns | overrides))


HAND = {
    "ipw": (1 * 0.5 + 1 * 2 + 0 * 2 + 1 * 0.5) / 4,
    "clipped-ipw": (1 * 0.5 + 1 * 1.5 + 0 * 1.5 + 1 * 0.5) / 4,  # clip = 1.5
    "snipw": (1 * 0.5 + 1 * 2 + 0 * 2 + 1 * 0.5) / (0.5 + 2 + 2 + 0.5),
    "dm": (0.5 + 0.3 + 0.45 + 0.25) / 4,
    "dr": (
        (0.5 + 0.5 * (1 - 0.6)) + (0.3 + 2 * (1 - 0.2)) + (0.45 + 2 * (0 - 0.4)) + (0.25 + 0.5 * (1 - 0.3))
    )
    / 4,
    "sndr": (0.5 + 0.3 + 0.45 + 0.25) / 4
    + (0.5 * (1 - 0.6) + 2 * (1 - 0.2) + 2 * (0 - 0.4) + 0.5 * (1 - 0.3)) / (0.5 + 2 + 2 + 0.5),
    # switch_lambda = 1: rows 1 and 2 (w = 2) keep only the model's value
    "switch-dr": ((0.5 + 0.5 * (1 - 0.6)) + 0.3 + 0.45 + (0.25 + 0.5 * (1 - 0.3))) / 4,
    "iips": (1 * 0.5 + 1 * 2 + 0 * 2 + 1 * 0.5) / 2,  # per slate: two slates
    # slate weights a: 0.2 / 0.1 = 2, b: 0.01 / 0.05 = 0.2; slate rewards a: 2, b: 1
    "sips": (2 * (1 + 1) + 0.2 * (0 + 1)) / 2,
}


@pytest.mark.parametrize("name", ESTIMATORS)
def test_every_estimator_matches_its_formula_by_hand(name):
    value = estimate(hand_log(), name, clip=1.5, switch_lambda=1.0)
    assert value == pytest.approx(HAND[name], abs=1e-12)


def test_the_hand_values_are_the_ones_worked_on_paper():
    assert (HAND["ipw"], HAND["clipped-ipw"], HAND["snipw"]) == pytest.approx((0.75, 0.625, 0.6))
    assert (HAND["dm"], HAND["dr"], HAND["sndr"]) == pytest.approx((0.375, 0.7125, 0.645))
    assert (HAND["switch-dr"], HAND["iips"], HAND["sips"]) == pytest.approx((0.5125, 1.5, 2.1))


def synthetic_log(
    rng: np.random.Generator,
    *,
    n_slates: int = 300,
    n_items: int = 8,
    n_positions: int = 3,
    n_contexts: int = 3,
    target_sharpness: float = 2.0,
    problem: int | None = None,
    rates: tuple[float, float] = (0.05, 0.6),
) -> dict:
    """A random contextual problem with a known truth; positions drawn independently from each
    policy's per-position marginals (the "positions handled independently" setting).

    ``problem`` seeds the policies and reward probabilities (default: drawn from ``rng`` too), so
    repeated logs of one problem differ only in the logged data. Returns the feedback (with a
    perfect reward model: ``q_hat`` and ``dm_value`` are the true expectations), ``truth`` (the
    target's mean reward per impression) and the dense arrays OBP takes.
    """

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    draw = rng if problem is None else np.random.default_rng(problem)
    logging = softmax(draw.normal(size=(n_contexts, n_positions, n_items)))
    target = softmax(target_sharpness * draw.normal(size=(n_contexts, n_positions, n_items)))
    q = draw.uniform(*rates, size=(n_contexts, n_items))[:, :, None] / (1 + 0.2 * np.arange(n_positions))
    truth = float(np.mean(np.sum(target * q.transpose(0, 2, 1), axis=-1)))  # contexts are uniform

    context = np.repeat(rng.integers(0, n_contexts, n_slates), n_positions)
    position = np.tile(np.arange(n_positions), n_slates)
    cumulative = logging[context, position].cumsum(axis=-1)
    action = np.minimum((cumulative < rng.random((len(context), 1))).sum(axis=-1), n_items - 1)
    q_logged = q[context, action, position]
    reward = (rng.random(len(context)) < q_logged).astype(float)
    action_dist = target[context].transpose(0, 2, 1)  # OBP's [n, n_actions, len_list]
    q_dense = np.broadcast_to(q[context], action_dist.shape)
    feedback = BanditFeedback(
        reward=reward,
        position=position,
        pscore=logging[context, position, action],
        slate_id=np.repeat(np.arange(n_slates), n_positions),
        target_pscore=target[context, position, action],
        item=action,
        q_hat=q_logged,
        dm_value=np.sum(target[context, position] * q[context, :, position], axis=-1),
    )
    return dict(feedback=feedback, truth=truth, action=action, action_dist=action_dist, q_dense=q_dense)


def obp_dense(name: str, log: dict, clip: float, switch_lambda: float) -> float:
    """OBP 0.5.x's ``_estimate_round_rewards(...).mean()`` on dense arrays, transcribed from
    obp/ope/estimators.py (InverseProbabilityWeighting, SelfNormalized..., DirectMethod, DoublyRobust,
    SelfNormalizedDoublyRobust, SwitchDoublyRobust) and estimators_slate.py (SlateIndependentIPS)."""
    fb, action, action_dist, q_dense = log["feedback"], log["action"], log["action_dist"], log["q_dense"]
    reward, position, pscore, slate_id = fb.reward, fb.position, fb.pscore, fb.slate_id
    n = action.shape[0]
    iw = action_dist[np.arange(n), action, position] / pscore
    q_hat_at_position = q_dense[np.arange(n), :, position]
    q_hat_factual = q_dense[np.arange(n), action, position]
    dm = np.average(q_hat_at_position, weights=action_dist[np.arange(n), :, position], axis=1)
    round_rewards = {
        "ipw": lambda: reward * np.minimum(iw, np.inf),
        "clipped-ipw": lambda: reward * np.minimum(iw, clip),
        "snipw": lambda: reward * iw / iw.mean(),
        "dm": lambda: dm,
        "dr": lambda: dm + iw * (reward - q_hat_factual),
        "sndr": lambda: dm + iw * (reward - q_hat_factual) / iw.mean(),
        "switch-dr": lambda: dm + np.array(iw <= switch_lambda, dtype=int) * iw * (reward - q_hat_factual),
    }
    if name == "iips":
        return (reward * iw).sum() / np.unique(slate_id).shape[0]
    return float(round_rewards[name]().mean())


@pytest.mark.parametrize("name", [n for n in ESTIMATORS if n != "sips"])
def test_sparse_estimates_equal_obps_dense_formulas(name):
    log = synthetic_log(np.random.default_rng(3), n_slates=400)
    weights = log["feedback"].importance_weight
    clip, switch_lambda = np.quantile(weights, 0.9), np.quantile(weights, 0.8)
    ours = estimate(log["feedback"], name, clip=clip, switch_lambda=switch_lambda)
    assert ours == pytest.approx(obp_dense(name, log, clip, switch_lambda), abs=1e-12, rel=0)


def test_ips_with_the_logging_policy_as_target_is_the_on_policy_mean():
    fb = synthetic_log(np.random.default_rng(0))["feedback"]
    on_policy = BanditFeedback(
        reward=fb.reward,
        position=fb.position,
        pscore=fb.pscore,
        slate_id=fb.slate_id,
        target_pscore=fb.pscore,
    )
    assert estimate(on_policy, "ipw") == pytest.approx(fb.reward.mean(), abs=1e-15)
    assert estimate(on_policy, "snipw") == pytest.approx(fb.reward.mean(), abs=1e-15)


def test_snips_is_invariant_to_scaling_all_weights_and_ips_is_not():
    fb = synthetic_log(np.random.default_rng(1))["feedback"]
    scaled = BanditFeedback(
        reward=fb.reward,
        position=fb.position,
        pscore=fb.pscore,
        slate_id=fb.slate_id,
        target_pscore=fb.target_pscore * 0.3,
    )
    assert estimate(scaled, "snipw") == pytest.approx(estimate(fb, "snipw"), rel=1e-12)
    assert estimate(scaled, "ipw") == pytest.approx(0.3 * estimate(fb, "ipw"), rel=1e-12)


def test_dr_with_a_perfect_reward_model_varies_less_than_ips():
    rng = np.random.default_rng(7)
    logs = [synthetic_log(rng, problem=11, rates=(0.6, 0.95)) for _ in range(60)]
    values = np.array([[estimate(log["feedback"], name) for name in ("ipw", "dr")] for log in logs])
    ipw_var, dr_var = values.var(axis=0)
    assert dr_var < 0.7 * ipw_var


def test_clipped_ips_is_at_most_ips_with_positive_rewards():
    rng = np.random.default_rng(2)
    for _ in range(20):
        fb = synthetic_log(rng, n_slates=50)["feedback"]
        for clip in (0.5, 1.0, 3.0):
            assert estimate(fb, "clipped-ipw", clip=clip) <= estimate(fb, "ipw")
    assert estimate(fb, "clipped-ipw", clip=np.inf) == estimate(fb, "ipw")


def test_switch_dr_is_dr_at_infinite_lambda_and_dm_at_zero():
    # OBP keeps the DR correction where w <= lambda: lambda = 0 keeps only rows with w = 0 (which add 0).
    fb = synthetic_log(np.random.default_rng(4))["feedback"]
    assert estimate(fb, "switch-dr", switch_lambda=np.inf) == pytest.approx(estimate(fb, "dr"), abs=1e-15)
    assert estimate(fb, "switch-dr", switch_lambda=0.0) == pytest.approx(estimate(fb, "dm"), abs=1e-15)
    middle = estimate(fb, "switch-dr", switch_lambda=1.0)
    assert middle not in (pytest.approx(estimate(fb, "dr")), pytest.approx(estimate(fb, "dm")))


def test_iips_is_ipw_times_the_slate_length():
    fb = synthetic_log(np.random.default_rng(5), n_positions=4)["feedback"]
    assert estimate(fb, "iips") == pytest.approx(4 * estimate(fb, "ipw"), rel=1e-12)


def test_model_based_estimators_name_the_missing_column():
    bare = hand_log(q_hat=None)
    with pytest.raises(DataError, match="dr needs .*q_hat"):
        estimate(bare, "dr")
    with pytest.raises(DataError, match="sips needs .*slate_pscore"):
        estimate(hand_log(slate_pscore=None, target_slate_pscore=None), "sips")
    assert estimate(bare, "dm") == pytest.approx(HAND["dm"])  # dm needs only dm_value


def test_unknown_estimators_and_bad_thresholds_are_config_errors():
    with pytest.raises(ConfigError, match="unknown estimator 'ips'.*ipw"):
        make_estimator("ips")
    with pytest.raises(ConfigError, match="clip"):
        make_estimator("clipped-ipw", clip=-1.0)
    with pytest.raises(ConfigError, match="switch_lambda"):
        make_estimator("switch-dr", switch_lambda=float("nan"))
