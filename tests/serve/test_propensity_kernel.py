"""The compiled softmax propensities: exact against enumeration, the same slate probability as the
closed form, and a session's numbers independent of the batch it comes in."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from shopformer.serve.rank_marginals import (
    plackett_luce_draw_probabilities,
    plackett_luce_slate_probabilities,
    plackett_luce_slate_probability,
)


def enumerated(weights: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """P(picks[p] at slot p) by summing the probability of every ordered list that puts it there."""
    k = picks.size
    out = np.zeros(k)
    for perm in itertools.permutations(range(weights.size), k):
        hit = np.array(perm) == picks
        if hit.any():
            out[hit] += plackett_luce_slate_probability(weights, np.array(perm))
    return out


@pytest.mark.parametrize("spread", [0.01, 1.0, 3.0, 6.0])
@pytest.mark.parametrize(("n", "k"), [(6, 6), (7, 4), (8, 3), (5, 1), (3, 2)])
def test_propensities_equal_enumeration_of_every_ranking(spread, n, k):
    rng = np.random.default_rng(int(spread * 100) + n * 10 + k)
    weights = np.exp(rng.normal(0.0, spread, (4, n)))
    picks = np.stack([rng.permutation(n)[:k] for _ in range(4)])
    got, _ = plackett_luce_draw_probabilities(weights, picks)
    exact = np.stack([enumerated(weights[i], picks[i]) for i in range(4)])
    np.testing.assert_allclose(got, exact, rtol=5e-6, atol=1e-15)


def test_slate_probabilities_equal_the_closed_form():
    rng = np.random.default_rng(0)
    weights = np.exp(rng.normal(0.0, 2.0, (16, 20)))
    picks = np.stack([rng.permutation(20)[:10] for _ in range(16)])
    _, slates = plackett_luce_draw_probabilities(weights, picks)
    np.testing.assert_allclose(slates, plackett_luce_slate_probabilities(weights, picks), rtol=1e-12)


def test_a_session_gets_the_same_numbers_alone_and_in_any_batch():
    rng = np.random.default_rng(1)
    weights = np.exp(rng.normal(0.0, 1.0, (8, 20)))
    weights[3] = np.exp(rng.normal(0.0, 8.0, 20))  # a far wider grid than the others need
    picks = np.stack([rng.permutation(20)[:10] for _ in range(8)])
    together, slates = plackett_luce_draw_probabilities(weights, picks)
    for i in range(8):
        alone, slate = plackett_luce_draw_probabilities(weights[i : i + 1], picks[i : i + 1])
        np.testing.assert_array_equal(alone[0], together[i])
        assert slate[0] == slates[i]


def test_weights_far_below_the_largest_are_floored_as_the_draw_floors_them():
    weights = np.array([[1.0, 1e-30, 1e-40, 0.5]])
    picks = np.array([[2, 1]])
    got, _ = plackett_luce_draw_probabilities(weights, picks)
    floored = np.maximum(weights[0], 1e-13)
    np.testing.assert_allclose(got[0], enumerated(floored, picks[0]), rtol=1e-5)
    assert (got > 0).all()
