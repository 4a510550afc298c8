"""Simulated visitors of the synthetic shop against a live service, and the true value of any policy.

A bundle trained on the synthetic shop records the generator's settings in its manifest, so the
shop's simulator (:class:`~shopformer.offpolicy.simulator.Simulator`) can be rebuilt from the bundle
alone. :func:`drive_visitors` sends each visitor's session to ``POST /recommend``, draws the visitor's
clicks and purchases on what was shown from the simulator's known probabilities, and reports them to
``POST /feedback`` (bounded in count and time). :func:`policy_truth` computes exactly what a bundle
under an exploration policy earns per impression on the same visitors.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

from shopformer.data.synthetic import SyntheticConfig
from shopformer.errors import ConfigError, DataError
from shopformer.offpolicy.simulator import Contexts, Simulator
from shopformer.serve.bundle import read_manifest
from shopformer.serve.policies import Policy
from shopformer.serve.recommender import Recommender
from shopformer.serve.sessions import Session

SYNTHETIC_SOURCE = "shopformer.data.sources.SyntheticSource"


def simulator_of_bundle(bundle: str) -> Simulator:
    """The simulator of the synthetic shop a bundle was trained on (from its manifest)."""
    manifest = read_manifest(bundle)
    source = (manifest.get("train_config") or {}).get("data", {}).get("source", {})
    if source.get("_target_") != SYNTHETIC_SOURCE:
        found = source.get("_target_", "no data source in its manifest")
        raise DataError(f"bundle {bundle}: trained on {found}, not the synthetic shop: there is no simulator")
    known = {f.name for f in dataclasses.fields(SyntheticConfig)}
    return Simulator(SyntheticConfig(**{k: v for k, v in source.items() if k in known}))


def policy_truth(
    sim: Simulator, contexts: Contexts, rec: Recommender, policy: Policy, k: int = 10, batch: int = 256
) -> dict[str, float]:
    """Exact click, purchase and revenue per impression of ``rec`` under ``policy`` on ``contexts``."""
    wide = k if policy.name == "greedy" else max(k, policy.config.top_n)
    sessions = [Session(s.tolist(), k=wide) for s in contexts.sessions()]
    results = [
        r for i in range(0, len(sessions), batch) for r in rec.recommend_batch(sessions[i : i + batch])
    ]
    # a visitor whose history the bundle does not know is shown nothing: no impression to value
    answered = np.flatnonzero([len(r.items) > 0 for r in results])
    results = [results[i] for i in answered]
    width = max((len(r.items) for r in results), default=0)
    if width < k:
        raise DataError(f"the bundle offers {width} candidates, fewer than k={k}")
    candidates = np.full((len(results), width), int(sim.item_ids[0]), dtype=np.int64)
    marginals = np.zeros((len(results), width, k))
    for row, result in enumerate(results):
        ids = np.array([item for item, _ in result.items], dtype=np.int64)
        scores = np.array([score for _, score in result.items])
        candidates[row, : ids.size] = ids
        marginals[row, : ids.size] = policy.marginals(scores, k, ids)
    contexts = contexts.take(answered)
    return sim.true_value(contexts, candidates, marginals)


@dataclass
class VisitReport:
    """What the simulated visitors did."""

    visitors: int = 0
    answered: int = 0
    errors: int = 0
    first_error: str = ""
    shown: int = 0
    clicks: int = 0
    purchases: int = 0
    revenue: float = 0.0
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def line(self) -> str:
        rate = self.clicks / max(self.shown, 1)
        return (
            f"{self.answered:,} of {self.visitors:,} visitors answered in {self.seconds:.1f} s "
            f"({self.errors:,} errors{': ' + self.first_error if self.first_error else ''}); "
            f"{self.shown:,} items shown, {self.clicks:,} clicks ({100 * rate:.2f} %), "
            f"{self.purchases:,} purchases, revenue {self.revenue:,.2f}"
        )


def drive_visitors(
    url: str,
    sim: Simulator,
    contexts: Contexts,
    *,
    k: int = 10,
    seed: int = 0,
    clients: int = 4,
    max_seconds: float = 300.0,
    request_prefix: str = "visitor",
    progress: Callable[[int], None] | None = None,
) -> VisitReport:
    """Each visitor asks the service for ``k`` items and reports the clicks and purchases it makes."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"url: expected http://host:port, got {url!r}")
    report = VisitReport(visitors=len(contexts))
    sessions = contexts.sessions()
    deadline = time.monotonic() + max_seconds
    turn = iter(range(len(contexts)))
    turn_lock = threading.Lock()

    def visitor() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)
        try:
            while time.monotonic() < deadline:
                with turn_lock:
                    j = next(turn, None)
                if j is None:
                    return
                _visit(
                    conn,
                    sim,
                    contexts.take(np.array([j])),
                    sessions[j],
                    k,
                    f"{request_prefix}-{j}",
                    seed + j,
                    report,
                )
                if progress is not None:
                    progress(1)
        finally:
            conn.close()

    began = time.monotonic()
    threads = [threading.Thread(target=visitor, daemon=True) for _ in range(max(1, clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.seconds = time.monotonic() - began
    return report


def _visit(
    conn: http.client.HTTPConnection,
    sim: Simulator,
    context: Contexts,
    session: np.ndarray,
    k: int,
    request_id: str,
    seed: int,
    report: VisitReport,
) -> None:
    # the visitor is the A/B unit: a server splitting traffic keeps it on one arm
    body = {"items": session.tolist(), "k": k, "request_id": request_id, "session_id": request_id}
    answer = _post(conn, "/recommend", body, report)
    if answer is None:
        return
    shown = np.array([[item["item_id"] for item in answer["items"]]], dtype=np.int64)
    if not shown.size:
        with report.lock:
            report.answered += 1
        return
    outcome = sim.feedback(context, shown, seed=seed)
    events = []
    for slot, item in enumerate(shown[0].tolist()):
        if outcome.clicks[0, slot]:
            events.append({"request_id": request_id, "item_id": item, "event": "click"})
        if outcome.purchases[0, slot]:
            revenue = float(outcome.revenue[0, slot])
            events.append(
                {"request_id": request_id, "item_id": item, "event": "purchase", "revenue": revenue}
            )
    for event in events:
        _post(conn, "/feedback", event, report)
    with report.lock:
        report.answered += 1
        report.shown += shown.shape[1]
        report.clicks += int(outcome.clicks.sum())
        report.purchases += int(outcome.purchases.sum())
        report.revenue += float(outcome.revenue.sum())


def _post(conn: http.client.HTTPConnection, path: str, body: dict, report: VisitReport) -> dict | None:
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        if response.status == 200:
            return json.loads(payload)
        problem = f"{path} HTTP {response.status}: {payload[:200]!r}"
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        problem = f"{path}: {type(exc).__name__}: {exc}"
    with report.lock:
        report.errors += 1
        report.first_error = report.first_error or problem
    return None
