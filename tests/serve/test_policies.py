"""Exploration policies: propensities are probabilities of what is shown, and match what is drawn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from shopformer.errors import RequestError
from shopformer.serve.policies import Draw, PolicyConfig, request_rng
from shopformer.serve.rank_marginals import (
    plackett_luce_marginals,
    plackett_luce_propensities,
    plackett_luce_slate_probability,
)

SCORES = np.array([2.0, 1.5, 1.4, 0.3, -0.5, -1.0])
K = 3
POLICIES = {
    "greedy": PolicyConfig("greedy"),
    "epsilon_greedy": PolicyConfig("epsilon_greedy", epsilon=0.3),
    "softmax": PolicyConfig("softmax", temperature=0.7),
    "thompson": PolicyConfig("thompson", draws=500),
}


class FixedCounts:
    def __init__(self, shown: dict, clicks: dict) -> None:
        self.shown, self.clicks = shown, clicks

    def counts(self, ids):
        return (
            np.array([self.shown.get(i, 0) for i in ids], dtype=float),
            np.array([self.clicks.get(i, 0) for i in ids], dtype=float),
        )


def enumerate_marginals(weights: np.ndarray, k: int) -> np.ndarray:
    table = np.zeros((weights.size, k))
    for perm in itertools.permutations(range(weights.size), k):
        table[list(perm), range(k)] += plackett_luce_slate_probability(weights, np.array(perm))
    return table


@pytest.mark.parametrize("spread", [0.1, 1.0, 4.0, 12.0])
def test_plackett_luce_marginals_equal_enumeration_of_every_ranking(spread):
    rng = np.random.default_rng(int(spread * 10))
    for n, k in [(5, 3), (6, 6), (7, 4)]:
        weights = np.exp(rng.normal(0.0, spread, n))
        exact = enumerate_marginals(weights, k)
        assert np.abs(plackett_luce_marginals(weights, k) - exact).max() < 1e-6


def test_the_propensities_of_a_draw_are_its_entries_of_the_table():
    weights = np.exp(np.random.default_rng(3).normal(0.0, 1.5, (16, 12)))
    picks = np.stack([np.random.default_rng(i).permutation(12)[:5] for i in range(16)])
    table = plackett_luce_marginals(weights, 5)
    expected = table[np.arange(16)[:, None], picks, np.arange(5)]
    np.testing.assert_allclose(plackett_luce_propensities(weights, picks), expected, rtol=1e-4)


def test_a_batch_of_softmax_draws_equals_each_drawn_alone():
    policy = POLICIES["softmax"].build()
    rows = [np.sort(np.random.default_rng(i).normal(size=n))[::-1] for i, n in enumerate([6, 6, 9, 6])]
    together = policy.choose_many([Draw(s, 3, request_rng(f"b{i}")) for i, s in enumerate(rows)])
    for i, scores in enumerate(rows):
        alone = policy.choose(scores, 3, request_rng(f"b{i}"))
        np.testing.assert_array_equal(together[i].picks, alone.picks)
        np.testing.assert_allclose(together[i].propensities, alone.propensities, rtol=1e-12)


def test_plackett_luce_marginals_of_a_batch_equal_each_alone():
    weights = np.exp(np.random.default_rng(1).normal(0.0, 2.0, (4, 9)))
    batch = plackett_luce_marginals(weights, 4)
    for row in range(4):
        np.testing.assert_allclose(batch[row], plackett_luce_marginals(weights[row], 4), atol=1e-9)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_each_slot_s_propensities_sum_to_one_over_the_candidates(name):
    policy = POLICIES[name].build()
    table = policy.marginals(SCORES, K, ids=np.arange(SCORES.size))
    assert table.shape == (SCORES.size, K)
    np.testing.assert_allclose(table.sum(axis=0), 1.0, atol=1e-9)
    assert (table >= 0).all() and (table.sum(axis=1) <= 1 + 1e-9).all()  # an item fills one slot at most


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_propensities_match_the_frequencies_of_many_seeded_draws(name):
    policy = POLICIES[name].build()
    ids = np.arange(SCORES.size)
    draws = 2000
    seen = np.zeros((SCORES.size, K))
    for i in range(draws):
        slate = policy.choose(SCORES, K, request_rng(f"r{i}"), ids)
        assert len(set(slate.picks.tolist())) == K
        seen[slate.picks, np.arange(K)] += 1
        # the propensity returned is the policy's marginal for the slot it fills
        if name != "thompson":  # thompson's is a frequency over its own draws, checked below
            expected = policy.marginals(SCORES, K, ids)[slate.picks, np.arange(K)]
            # softmax logs the k propensities it shows without the full table's renormalisation
            np.testing.assert_allclose(slate.propensities, expected, rtol=1e-4, atol=1e-12)
    table = policy.marginals(SCORES, K, ids, rng=np.random.default_rng(7))  # thompson: 500 draws of its own
    # binomial standard error of a frequency over 2000 draws, with room for thompson's own estimate
    tolerance = 4.5 * np.sqrt(table * (1 - table) / draws) + (0.02 if name == "thompson" else 1e-9)
    assert (np.abs(seen / draws - table) <= tolerance).all(), seen / draws - table


def test_thompson_propensity_is_the_share_of_its_draws_that_show_that_slot():
    policy = POLICIES["thompson"].build()
    slate = policy.choose(SCORES, K, request_rng("x"), np.arange(SCORES.size))
    assert ((slate.propensities > 0) & (slate.propensities <= 1)).all()
    assert 0 < slate.slate_propensity <= slate.propensities.min() + 1e-12


def test_slate_propensities_sum_to_one_over_every_possible_list():
    ids = np.arange(5)
    scores = SCORES[:5]
    for name in ("epsilon_greedy", "softmax"):
        policy = POLICIES[name].build()
        total = 0.0
        for perm in itertools.permutations(range(5), 2):
            # find the probability the policy gives this list by asking it for one that shows it
            if name == "softmax":
                total += plackett_luce_slate_probability(policy.weights(scores), np.array(perm))
            else:
                eps, n = policy.config.epsilon, 5
                total += (1 - eps) * (perm == (0, 1)) + eps / (n * (n - 1))
        assert total == pytest.approx(1.0)
    greedy = POLICIES["greedy"].build().choose(scores, 2, request_rng("a"), ids)
    assert greedy.picks.tolist() == [0, 1] and greedy.slate_propensity == 1.0


def test_an_answer_is_reproduced_from_its_request_id():
    for name in ("epsilon_greedy", "softmax", "thompson"):
        policy = POLICIES[name].build()
        a = policy.choose(SCORES, K, request_rng("same-id"), np.arange(6))
        b = policy.choose(SCORES, K, request_rng("same-id"), np.arange(6))
        np.testing.assert_array_equal(a.picks, b.picks)
        np.testing.assert_array_equal(a.propensities, b.propensities)
    draws = {
        tuple(POLICIES["softmax"].build().choose(SCORES, K, request_rng(f"{i}")).picks) for i in range(50)
    }
    assert len(draws) > 1  # different ids explore differently


def test_thompson_moves_towards_items_that_get_clicked():
    ids = np.arange(SCORES.size)
    cold = POLICIES["thompson"].build().marginals(SCORES, 1, ids, rng=np.random.default_rng(0))[:, 0]
    # the last candidate (lowest score) was shown 400 times and clicked 200; the top one never clicked
    counts = FixedCounts({5: 400, 0: 400}, {5: 200, 0: 0})
    warm = POLICIES["thompson"].build(counts).marginals(SCORES, 1, ids, rng=np.random.default_rng(0))[:, 0]
    assert warm[5] > 0.9 > cold[5] and warm[0] < cold[0]


def test_bad_policy_settings_name_the_field():
    with pytest.raises(RequestError, match="policy.name.*one of"):
        PolicyConfig("boltzmann")
    with pytest.raises(RequestError, match="policy.temperature"):
        PolicyConfig("softmax", temperature=0.0)
    with pytest.raises(RequestError, match="policy.epsilon"):
        PolicyConfig().overridden({"epsilon": 1.5})
