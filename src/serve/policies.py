"""Exploration policies over retrieved candidates, each with the propensities of what it shows.

A policy gets the top-N candidates that survived the business rules (best first, with their scores)
and fills ``k`` slots. For every slot it returns the *propensity*: the probability that this item is
shown at this position under the policy, given the same candidates (the marginal that off-policy
estimators divide by), and the probability of the whole ranked list. ``marginals`` gives the full
[N, k] table of those probabilities, which off-policy evaluation needs for a target policy.

- ``greedy``: the top k, propensity 1 (today's behaviour).
- ``epsilon_greedy``: the top k with probability 1 - epsilon, else k of the N drawn uniformly.
- ``softmax``: Plackett-Luce sampling of the k slots, weights ``exp(score / temperature)``; exact
  marginals from :mod:`shopformer.serve.rank_marginals`.
- ``thompson``: Bernoulli Thompson sampling; each item's click rate has a Beta posterior whose prior
  mean comes from the model score and whose counts come from the feedback log
  (:class:`~shopformer.serve.bandit_counts.BanditCounts`); slots are filled by the sampled rates.
  Its marginals have no closed form: they are the frequencies over ``draws`` seeded samples that
  include the one shown (as the Open Bandit Pipeline estimates them), so they are never zero.

Randomness comes from :func:`request_rng`, seeded by the request id, so an answer can be reproduced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from math import lgamma
from typing import Any, Protocol

import numpy as np

from shopformer.errors import RequestError
from shopformer.serve.rank_marginals import (
    floored,
    plackett_luce_draw_probabilities,
    plackett_luce_marginals,
    plackett_luce_slate_probability,
)

POLICY_VERSION = "2"  # 2: draws from SHAKE-128 of the request id (1: numpy PCG64)
NAMES = ("greedy", "epsilon_greedy", "softmax", "thompson")


@dataclass(frozen=True)
class Draw:
    """One request's candidates (scores best first, raw ids), its slots and random generator."""

    scores: np.ndarray
    k: int
    rng: Any  # a RequestRandom or numpy Generator; None for deterministic policies (greedy)
    ids: Any = None


@dataclass(frozen=True)
class Slate:
    """What a policy shows: candidate indices in slot order, each slot's propensity, the list's."""

    picks: np.ndarray
    propensities: np.ndarray
    slate_propensity: float | None


class ItemCounts(Protocol):
    """Impressions and clicks per raw item id (Thompson sampling's posterior counts)."""

    def counts(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class PolicyConfig:
    """A policy and its settings; ``top_n`` is how many retrieved candidates it draws from."""

    name: str = "greedy"
    epsilon: float = 0.1
    temperature: float = 1.0
    top_n: int = 20
    prior_strength: float = 20.0
    prior_ctr: float = 0.05
    draws: int = 1000

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise RequestError(("policy", "name"), f"must be one of {', '.join(NAMES)}, got {self.name!r}")
        checks = {
            "epsilon": 0.0 <= self.epsilon <= 1.0,
            "temperature": self.temperature > 0,
            "top_n": isinstance(self.top_n, int) and 1 <= self.top_n <= 1000,
            "prior_strength": self.prior_strength > 0,
            "prior_ctr": 0.0 < self.prior_ctr < 1.0,
            "draws": isinstance(self.draws, int) and 10 <= self.draws <= 100_000,
        }
        for name, ok in checks.items():
            if not ok:
                raise RequestError(("policy", name), f"out of range: {getattr(self, name)!r}")

    def overridden(self, changes: Mapping[str, Any] | None) -> PolicyConfig:
        """This config with a request's overrides (``None`` values are ignored)."""
        given = {key: value for key, value in (changes or {}).items() if value is not None}
        return self if not given else PolicyConfig(**{**self.__dict__, **given})

    def build(self, counts: ItemCounts | None = None) -> Policy:
        if self.name == "greedy":
            return Greedy(self)
        if self.name == "epsilon_greedy":
            return EpsilonGreedy(self)
        if self.name == "softmax":
            return Softmax(self)
        return Thompson(self, counts)


@dataclass(frozen=True)
class Policy:
    """Base: fills k slots from candidate scores (best first); subclasses define how."""

    config: PolicyConfig
    name: str = field(init=False, default="greedy")
    version: str = field(init=False, default=POLICY_VERSION)

    def choose(self, scores: np.ndarray, k: int, rng: Any, ids: Any = None) -> Slate:
        k = min(k, scores.size)
        return Slate(np.arange(k), np.ones(k), 1.0)

    def choose_many(self, draws: list[Draw]) -> list[Slate]:
        """One slate per draw (the same as :meth:`choose` on each; subclasses may batch the work)."""
        return [self.choose(d.scores, d.k, d.rng, d.ids) for d in draws]

    def marginals(self, scores: np.ndarray, k: int, ids: Any = None, rng: Any = None) -> np.ndarray:
        """[N, k]: probability that candidate i is shown at slot p (each slot sums to one)."""
        k = min(k, scores.size)
        return np.eye(scores.size, k)

    def slate_probability(self, scores: np.ndarray, picks: np.ndarray) -> float | None:
        """Probability of showing exactly ``picks`` (candidate indices in slot order); None: unknown."""
        return float(np.array_equal(picks, np.arange(len(picks))))


class Greedy(Policy):
    """The top k candidates as ranked; deterministic."""


@dataclass(frozen=True)
class EpsilonGreedy(Policy):
    name: str = field(init=False, default="epsilon_greedy")

    def choose(self, scores: np.ndarray, k: int, rng: Any, ids: Any = None) -> Slate:
        return self.choose_many([Draw(scores, k, rng, ids)])[0]

    def choose_many(self, draws: list[Draw]) -> list[Slate]:
        """Each draw: one uniform decides whether to explore, n more order the candidates when it does."""
        out: list[Slate | None] = [None] * len(draws)
        eps = self.config.epsilon
        for (n, k), members in _same_shape(draws).items():
            u = uniform_rows([draws[i].rng for i in members], n + 1)
            explore = u[:, 0] < eps
            picks = np.where(explore[:, None], np.argsort(u[:, 1:], axis=1)[:, :k], np.arange(k))
            marginal = (1.0 - eps) * (picks == np.arange(k)) + eps / n
            top = np.all(picks == np.arange(k), axis=1)
            slate = (1.0 - eps) * top + eps * _one_ordered_list(n, k)
            for row, i in enumerate(members):
                out[i] = Slate(picks[row], marginal[row], float(slate[row]))
        return out  # type: ignore[return-value]

    def marginals(self, scores: np.ndarray, k: int, ids: Any = None, rng: Any = None) -> np.ndarray:
        n, k, eps = scores.size, min(k, scores.size), self.config.epsilon
        return (1.0 - eps) * np.eye(n, k) + eps / n

    def slate_probability(self, scores: np.ndarray, picks: np.ndarray) -> float | None:
        n, k, eps = scores.size, len(picks), self.config.epsilon
        return float((1.0 - eps) * np.array_equal(picks, np.arange(k)) + eps * _one_ordered_list(n, k))


@dataclass(frozen=True)
class Softmax(Policy):
    name: str = field(init=False, default="softmax")

    def weights(self, scores: np.ndarray) -> np.ndarray:
        z = np.asarray(scores, dtype=np.float64)
        z = (z - z.max(axis=-1, keepdims=True)) / self.config.temperature
        return floored(np.exp(z))

    def choose(self, scores: np.ndarray, k: int, rng: Any, ids: Any = None) -> Slate:
        return self.choose_many([Draw(scores, k, rng, ids)])[0]

    def choose_many(self, draws: list[Draw]) -> list[Slate]:
        """Draws with the same number of candidates and slots share one propensity computation."""
        out: list[Slate | None] = [None] * len(draws)
        for (n, k), members in _same_shape(draws).items():
            w = self.weights(np.stack([draws[i].scores for i in members]))
            # Gumbel-top-k is a Plackett-Luce draw; each request keeps its own random numbers
            u = uniform_rows([draws[i].rng for i in members], n)
            picks = np.argsort(-(np.log(w) - np.log(-np.log(u))), axis=1, kind="stable")[:, :k]
            propensities, slates = plackett_luce_draw_probabilities(w, picks)
            for row, i in enumerate(members):
                out[i] = Slate(picks[row], propensities[row], float(slates[row]))
        return out  # type: ignore[return-value]

    def marginals(self, scores: np.ndarray, k: int, ids: Any = None, rng: Any = None) -> np.ndarray:
        return plackett_luce_marginals(self.weights(scores), min(k, scores.size))

    def slate_probability(self, scores: np.ndarray, picks: np.ndarray) -> float | None:
        return plackett_luce_slate_probability(self.weights(scores), np.asarray(picks))


@dataclass(frozen=True)
class Thompson(Policy):
    counts: ItemCounts | None = None
    name: str = field(init=False, default="thompson")

    def posterior(self, scores: np.ndarray, ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """Beta parameters per candidate: prior mean from the score, plus logged clicks and misses."""
        cfg = self.config
        z = np.asarray(scores, dtype=np.float64)
        z = (z - z.mean()) / max(z.std(), 1e-9)  # scores only rank; their scale differs by model
        mean = 1.0 / (1.0 + np.exp(-(np.log(cfg.prior_ctr / (1 - cfg.prior_ctr)) + z)))
        alpha, beta = cfg.prior_strength * mean, cfg.prior_strength * (1.0 - mean)
        if self.counts is not None and ids is not None:
            shown, clicks = self.counts.counts(np.asarray(ids))
            alpha, beta = alpha + clicks, beta + np.maximum(shown - clicks, 0)
        return alpha, beta

    def _draws(self, scores: np.ndarray, k: int, rng: Any, ids: Any) -> np.ndarray:
        alpha, beta = self.posterior(scores, ids)
        rates = rng.beta(alpha, beta, size=(self.config.draws, scores.size))
        return np.argsort(-rates, axis=1, kind="stable")[:, :k]  # [draws, k]

    def choose(self, scores: np.ndarray, k: int, rng: Any, ids: Any = None) -> Slate:
        k = min(k, scores.size)
        ranked = self._draws(scores, k, rng, ids)
        picks = ranked[0]
        table = _frequencies(ranked, scores.size)
        same = float(np.mean(np.all(ranked == picks, axis=1)))
        return Slate(picks, table[picks, np.arange(k)], same)

    def marginals(self, scores: np.ndarray, k: int, ids: Any = None, rng: Any = None) -> np.ndarray:
        rng = rng if rng is not None else np.random.default_rng(0)
        return _frequencies(self._draws(scores, min(k, scores.size), rng, ids), scores.size)

    def slate_probability(self, scores: np.ndarray, picks: np.ndarray) -> float | None:
        return None  # no closed form; a frequency over draws would be near zero for most lists


def _frequencies(ranked: np.ndarray, n: int) -> np.ndarray:
    """[n, k] share of draws that put candidate i at slot p."""
    draws, k = ranked.shape
    cells = (ranked * k + np.arange(k)).ravel()  # (candidate, slot) as one index; bincount: 4x np.add.at
    return np.bincount(cells, minlength=n * k).reshape(n, k) / draws


def _one_ordered_list(n: int, k: int) -> float:
    """Probability of one given ordered list of k of n candidates drawn uniformly: (n - k)! / n!."""
    return float(np.exp(lgamma(n - k + 1) - lgamma(n + 1)))


def _same_shape(draws: list[Draw]) -> dict[tuple[int, int], list[int]]:
    """Draw indices grouped by (candidates, slots): each group is one batched computation."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, d in enumerate(draws):
        groups.setdefault((d.scores.size, min(d.k, d.scores.size)), []).append(i)
    return groups


class RequestRandom:
    """The random numbers of one request: a SHAKE-128 stream of its id (a microsecond, where seeding a
    numpy generator costs twenty). ``random`` reads the stream in order, as ``Generator.random``
    does; Thompson sampling's Beta draws come from a numpy generator seeded by the same id."""

    __slots__ = ("_key", "_used", "_generator")

    def __init__(self, key: bytes) -> None:
        self._key, self._used, self._generator = key, 0, None

    def take(self, n: int) -> bytes:
        """The next ``8 n`` bytes of the stream."""
        start, self._used = self._used, self._used + n
        return hashlib.shake_128(self._key).digest(8 * self._used)[8 * start :]

    def random(self, size: int | None = None) -> Any:
        u = _uniforms(self.take(1 if size is None else int(size)))
        return float(u[0]) if size is None else u

    def generator(self) -> np.random.Generator:
        if self._generator is None:
            seed = hashlib.shake_128(b"generator\x00" + self._key).digest(16)
            self._generator = np.random.default_rng(int.from_bytes(seed, "little"))
        return self._generator

    def beta(self, a: Any, b: Any, size: Any = None) -> np.ndarray:
        return self.generator().beta(a, b, size=size)


def _uniforms(raw: bytes) -> np.ndarray:
    """Floats strictly inside (0, 1) from 8 random bytes each (53 bits, centred in their interval)."""
    return ((np.frombuffer(raw, dtype="<u8") >> np.uint64(11)) + 0.5) * 2.0**-53


def uniform_rows(rngs: list[Any], n: int) -> np.ndarray:
    """[len(rngs), n] uniforms, row i from ``rngs[i]`` (a :class:`RequestRandom` or a numpy generator)."""
    if all(isinstance(r, RequestRandom) for r in rngs):  # one conversion for the whole batch
        return _uniforms(b"".join(r.take(n) for r in rngs)).reshape(len(rngs), n)
    return np.stack([np.asarray(r.random(n), dtype=np.float64) for r in rngs])


def request_rng(request_id: str, salt: str = "") -> RequestRandom:
    """The random numbers of one request: the same id (and salt) gives the same draws."""
    return RequestRandom(f"{salt}\x00{request_id}".encode())
