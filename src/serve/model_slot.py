"""What the service answers with: the bundle being served, its policy, its logs, and an A/B challenger.

:class:`ModelSlot` is replaced-in-place state shared by every request: ``current`` is swapped whole
(one reference assignment) on reload, so a request keeps the model it started with.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from shopformer.errors import RequestError
from shopformer.serve.exploration import Ask, Shown, answer_asks, make_ask
from shopformer.serve.policies import PolicyConfig
from shopformer.serve.recommender import Recommender
from shopformer.serve.schemas import RecommendIn
from shopformer.serve.serving_logs import ServingLogs
from shopformer.serve.traffic_split import TrafficSplit


class ModelSlot:
    """The recommender being served; replaced whole (one reference assignment) on reload."""

    def __init__(
        self,
        recommender: Recommender,
        load_options: Mapping[str, Any],
        policy: PolicyConfig | None = None,
        logs: ServingLogs | None = None,
        challenger: Recommender | None = None,
        split: TrafficSplit | None = None,
    ) -> None:
        self.current = recommender
        self.load_options = dict(load_options)
        self.reloading = threading.Lock()
        self.policy = policy or PolicyConfig()
        self.logs = logs
        self.challenger, self.split = challenger, split  # an A/B test: arm 0 is current, arm 1 this

    def route(self, ask: Ask) -> tuple[Recommender, str | None]:
        """The model that answers this ask and its arm's name (None outside an A/B test)."""
        if self.split is None or self.challenger is None:
            return self.current, None
        arm = self.split.arm(ask.unit)
        return (self.current, self.challenger)[arm], self.split.names[arm]

    def ask(self, body: RecommendIn, i: int = 0) -> Ask:
        """The request as an :class:`Ask` under the server's policy with the request's overrides."""
        config = self.policy
        if body.policy is not None:
            config = config.overridden(body.policy.as_overrides())  # RequestError naming the field
        counts = self.logs.counts if self.logs is not None else None
        return make_ask(body.as_session(), config.build(counts), body.request_id, i, body.unit())

    def log(self, rec: Recommender, asks: list[Ask], shown: list[Shown], arm: str | None) -> None:
        if self.logs is not None:
            for ask, answer in zip(asks, shown, strict=True):
                self.logs.record(ask, answer, (rec.name, rec.version), ask.session.filters, arm)

    def answer(self, asks: list[Ask]) -> list[tuple[Shown, Recommender, str | None]]:
        """Answer and log every ask: one encoder run and index search per arm. A bad request is a
        :class:`RequestError` located by its position among ``asks``."""
        routes = [self.route(ask) for ask in asks]
        out: list[Any] = [None] * len(asks)
        for rec, arm in dict.fromkeys(routes):
            members = [i for i, route in enumerate(routes) if route == (rec, arm)]
            try:
                results = answer_asks(rec, [asks[i] for i in members])
            except RequestError as exc:
                if exc.loc and isinstance(exc.loc[0], int):  # its position in the arm -> in the batch
                    raise RequestError((members[exc.loc[0]], *exc.loc[1:]), exc.message) from None
                raise
            self.log(rec, [asks[i] for i in members], results, arm)
            for i, result in zip(members, results, strict=True):
                out[i] = (result, rec, arm)
        return out
