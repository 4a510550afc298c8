"""Logs of a policy on the simulator, replayed against a target policy, with the target's true value.

For benchmarks and tests that need many seeds without a server: each visitor's candidates and scores
come from any scorer (the simulator's noisy oracle, or a bundle), the logging policy draws the slates
(vectorised where the policy allows), the simulator draws clicks, purchases and revenue, and the
target policy's marginals give each logged row its target propensity and the target's true value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shopformer.offpolicy.feedback import BanditFeedback
from shopformer.offpolicy.reward_model import EmpiricalBayesRewardModel
from shopformer.offpolicy.simulator import REWARDS, Contexts, Simulator
from shopformer.serve.policies import EpsilonGreedy, Policy, Softmax, request_rng
from shopformer.serve.rank_marginals import plackett_luce_marginals

CHUNK = 256  # visitors per batched marginals call (bounds its memory)


@dataclass
class SimulatedLog:
    """Logged slates with their outcomes and the logging policy's propensities."""

    candidates: np.ndarray  # [n, N] raw ids, best first by the logging scorer
    shown: np.ndarray  # [n, k] candidate indices
    propensity: np.ndarray  # [n, k] logging marginal of each shown slot
    slate_propensity: np.ndarray  # [n]
    rewards: dict[str, np.ndarray]  # click / purchase / revenue, each [n, k]
    explores: bool = True  # False: the logging policy shows only its top k (greedy)


def batch_marginals(policy: Policy, scores: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """[n, N, k] marginals of ``policy`` for every row of ``scores`` [n, N]."""
    n, size = scores.shape
    if isinstance(policy, Softmax):
        out = np.empty((n, size, k))
        for lo in range(0, n, CHUNK):
            out[lo : lo + CHUNK] = plackett_luce_marginals(policy.weights(scores[lo : lo + CHUNK]), k)
        return out
    if isinstance(policy, EpsilonGreedy) or policy.name == "greedy":
        return np.broadcast_to(policy.marginals(scores[0], k), (n, size, k)).copy()
    rng = np.random.default_rng(seed)
    return np.stack([policy.marginals(row, k, rng=rng) for row in scores])


def draw(
    policy: Policy, scores: np.ndarray, k: int, seed: int, table: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shown [n, k] candidate indices, their propensities, slate probabilities) of one draw per row.

    ``table``: the policy's marginals for these scores, when already computed (they do not change
    from one seed to the next)."""
    n, size = scores.shape
    if isinstance(policy, Softmax):
        rng = np.random.default_rng(seed)
        w = policy.weights(scores)
        picks = np.argsort(-(np.log(w) + rng.gumbel(size=w.shape)), axis=1, kind="stable")[:, :k]
        table = batch_marginals(policy, scores, k) if table is None else table
        props = table[np.arange(n)[:, None], picks, np.arange(k)]
        slates = np.array([policy.slate_probability(s, p) for s, p in zip(scores, picks, strict=True)])
        return picks, props, slates
    slates = [policy.choose(row, k, request_rng(f"{seed}-{i}", policy.name)) for i, row in enumerate(scores)]
    picks = np.stack([s.picks for s in slates])
    props = np.stack([s.propensities for s in slates])
    return picks, props, np.array([s.slate_propensity or np.nan for s in slates])


def simulate_log(
    sim: Simulator,
    contexts: Contexts,
    candidates: np.ndarray,
    scores: np.ndarray,
    policy: Policy,
    k: int,
    seed: int,
    table: np.ndarray | None = None,
) -> SimulatedLog:
    """The logging policy's slates on each visitor, with sampled outcomes (``table``: see :func:`draw`)."""
    picks, props, slates = draw(policy, scores, k, seed, table)
    shown_ids = np.take_along_axis(candidates, picks, axis=1)
    outcome = sim.feedback(contexts, shown_ids, seed=seed + 1)
    rewards = {"click": outcome.clicks.astype(float), "purchase": outcome.purchases.astype(float)}
    rewards["revenue"] = outcome.revenue
    return SimulatedLog(candidates, picks, props, slates, rewards, explores=policy.name != "greedy")


def target_rows(
    log: SimulatedLog, target_candidates: np.ndarray, target_marginals: np.ndarray, reward: str
) -> BanditFeedback:
    """Bandit feedback of the log against a target given by its candidates [n, M] and marginals [n, M, k]."""
    n, k = log.shown.shape
    shown_ids = np.take_along_axis(log.candidates, log.shown, axis=1)  # [n, k]
    match = shown_ids[:, :, None] == target_candidates[:, None, :]  # [n, k, M]
    slot_marginals = np.transpose(target_marginals, (0, 2, 1))  # [n, k, M]
    target = (match * slot_marginals).sum(axis=2)
    position = np.broadcast_to(np.arange(k), (n, k))
    reward_values = log.rewards[reward]
    model = EmpiricalBayesRewardModel().fit(shown_ids.ravel(), position.ravel(), reward_values.ravel())
    q_all = model.predict(
        np.repeat(target_candidates[:, None, :], k, axis=1).ravel(),
        np.broadcast_to(np.arange(k)[None, :, None], (n, k, target_candidates.shape[1])).ravel(),
    ).reshape(n, k, -1)
    dm_value = (slot_marginals * q_all).sum(axis=2)
    if log.explores:  # any of the logging candidates can appear at any slot
        pool = (target_candidates[:, :, None] == log.candidates[:, None, :]).any(axis=2)[:, None, :]
    else:  # greedy: only what it showed, where it showed it
        pool = match
    unsupported = (slot_marginals * ~pool).sum(axis=2)
    return BanditFeedback(
        reward=reward_values.ravel(),
        position=position.ravel(),
        pscore=log.propensity.ravel(),
        slate_id=np.repeat(np.arange(n), k),
        target_pscore=np.clip(target.ravel(), 0.0, 1.0),  # float sums may pass 1 by an ulp
        item=shown_ids.ravel(),
        q_hat=model.predict(shown_ids.ravel(), position.ravel()),
        dm_value=dm_value.ravel(),
        unsupported_mass=np.clip(unsupported.ravel(), 0.0, 1.0),
    )


def truth(
    sim: Simulator, contexts: Contexts, candidates: np.ndarray, marginals: np.ndarray
) -> dict[str, float]:
    """The target's exact value per impression, for every reward."""
    return sim.true_value(contexts, candidates, marginals)


__all__ = ["REWARDS", "SimulatedLog", "batch_marginals", "draw", "simulate_log", "target_rows", "truth"]
