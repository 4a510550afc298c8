"""Off-policy estimates on the simulator against its ground truth: IPS is unbiased, intervals cover."""

from __future__ import annotations

import numpy as np
import pytest

from shopformer.data.synthetic import SyntheticConfig
from shopformer.offpolicy.report import evaluate
from shopformer.offpolicy.simulated_logs import batch_marginals, simulate_log, target_rows
from shopformer.offpolicy.simulator import Simulator
from shopformer.serve.policies import PolicyConfig

K, N = 5, 15


@pytest.fixture(scope="module")
def world():
    sim = Simulator(SyntheticConfig(n_users=300, n_items=200, seed=3))
    contexts = sim.contexts(1500, seed=0)
    candidates, scores = sim.scores(contexts, noise=1.5, seed=1, n_candidates=N)
    logging = PolicyConfig("softmax", temperature=1.0).build()
    table = batch_marginals(logging, scores, K)
    # the target: greedy on the same candidates re-ranked by a better model (less noise)
    rho = np.log(sim.relevance(contexts, candidates))
    better = rho + 0.3 * np.random.default_rng(2).standard_normal(rho.shape)
    order = np.argsort(-better, axis=1, kind="stable")
    target_candidates = np.take_along_axis(candidates, order, axis=1)
    greedy = batch_marginals(PolicyConfig("greedy").build(), better, K)
    truth = sim.true_value(contexts, target_candidates, greedy)
    return sim, contexts, candidates, scores, logging, table, target_candidates, greedy, truth


def test_logged_propensities_are_the_softmax_marginals_of_the_shown_slots(world):
    sim, contexts, candidates, scores, logging, table, *_ = world
    log = simulate_log(sim, contexts, candidates, scores, logging, K, seed=0, table=table)
    row = 17
    expected = logging.marginals(scores[row], K)[log.shown[row], np.arange(K)]
    np.testing.assert_allclose(log.propensity[row], expected, rtol=1e-9)


def test_ips_and_the_doubly_robust_family_are_unbiased_on_the_simulator(world):
    sim, contexts, candidates, scores, logging, table, target_candidates, greedy, truth = world
    names = ["ipw", "snipw", "dr"]
    values, covered = {name: [] for name in names}, 0
    seeds = 24
    for seed in range(seeds):
        log = simulate_log(sim, contexts, candidates, scores, logging, K, seed=seed, table=table)
        feedback = target_rows(log, target_candidates, greedy, "click")
        assert feedback.unsupported_mass.max() < 1e-12  # the target re-ranks the logged pool
        estimates = evaluate(feedback, names, n_bootstrap=200, seed=seed)
        for e in estimates:
            values[e.name].append(e.value)
        covered += estimates[0].low <= truth["click"] <= estimates[0].high
    for name in names:  # the mean over seeds lies within its interval of the truth
        mean, se = np.mean(values[name]), np.std(values[name], ddof=1) / np.sqrt(seeds)
        assert abs(mean - truth["click"]) <= 3 * se, (name, mean, se, truth["click"])
    assert covered >= 0.8 * seeds  # IPS's per-seed 95 % intervals cover the truth (most of the time)
    # the target is better than what the logging policy shows, and the estimates say so
    logged_truth = sim.true_value(contexts, candidates, table)["click"]
    assert truth["click"] > logged_truth and np.mean(values["ipw"]) > logged_truth
