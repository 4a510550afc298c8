"""Recommendations through an exploration policy: retrieve top-N after the rules, let the policy fill k slots.

An :class:`Ask` is one session with its policy and request id; :func:`answer_asks` answers many with
one encoder run and one index search (the same path as plain recommendations), then draws each
answer with the request's own random generator (:func:`~shopformer.serve.policies.request_rng`).
Greedy answers need no wider retrieval: they are today's top k, with propensity 1.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from shopformer.serve.policies import Draw, Policy, request_rng
from shopformer.serve.recommender import Recommender
from shopformer.serve.sessions import Session, parse_session


@dataclass(frozen=True)
class Ask:
    """One session to answer under ``policy``; ``request_id`` seeds its draws (a new id when empty)."""

    session: Session
    policy: Policy
    request_id: str = ""
    unit: str = ""  # who an A/B split assigns (user id, else session id; empty: the request id)

    def with_id(self) -> Ask:
        return self if self.request_id else replace(self, request_id=uuid.uuid4().hex)


@dataclass
class Shown:
    """What a session is shown: (raw id, score, propensity) per slot, and what was considered."""

    request_id: str
    policy: str
    policy_version: str
    items: list[tuple[Any, float, float]] = field(default_factory=list)
    slate_propensity: float | None = None
    candidates: list[Any] = field(default_factory=list)
    candidate_scores: list[float] = field(default_factory=list)
    unknown_items: list[Any] = field(default_factory=list)


def make_ask(
    spec: Session | dict, policy: Policy, request_id: str | None = None, i: int = 0, unit: Any = None
) -> Ask:
    """An :class:`Ask` from a session (or its mapping); a fresh request id when none is given."""
    session = spec if isinstance(spec, Session) else parse_session(spec, i)
    ask = Ask(session, policy, request_id or "", "" if unit is None else str(unit)).with_id()
    return ask if ask.unit else replace(ask, unit=ask.request_id)


def answer_asks(rec: Recommender, asks: Sequence[Ask]) -> list[Shown]:
    """Answer every ask: one retrieval for all (top-N where a policy explores), then each policy's draw."""
    wide = [
        a.session
        if a.policy.name == "greedy"
        else replace(a.session, k=max(a.session.k, a.policy.config.top_n))
        for a in asks
    ]
    results = rec.recommend_batch(wide)
    out = [
        Shown(a.request_id, a.policy.name, a.policy.version, unknown_items=r.unknown_items)
        for a, r in zip(asks, results, strict=True)
    ]
    groups: dict[Policy, list[int]] = {}
    for i, result in enumerate(results):
        if result.items:
            groups.setdefault(asks[i].policy, []).append(i)
    for policy, members in groups.items():  # one batched draw per policy (softmax shares its integrals)
        draws, candidates = [], []
        for i in members:
            ids = np.array([item for item, _ in results[i].items], dtype=object)
            scores = np.array([score for _, score in results[i].items], dtype=np.float64)
            # greedy draws nothing: skip seeding a generator (tens of microseconds a request)
            rng = None if policy.name == "greedy" else request_rng(asks[i].request_id, policy.name)
            draws.append(Draw(scores, asks[i].session.k, rng, ids))
            candidates.append(ids)
        for i, draw, ids, slate in zip(members, draws, candidates, policy.choose_many(draws), strict=True):
            shown = out[i]
            shown.items = [
                (ids[c], float(draw.scores[c]), float(p))
                for c, p in zip(slate.picks, slate.propensities, strict=True)
            ]
            shown.slate_propensity = slate.slate_propensity
            shown.candidates, shown.candidate_scores = ids.tolist(), draw.scores.tolist()
    return out
