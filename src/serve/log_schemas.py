"""The two serving logs' Arrow schemas and the helpers that build one row of each from plain values.

An impression row is one answered request: what the policy considered (``candidates``, best first, with
their scores), what it showed (``shown``, position = index + 1) and with which probability
(``propensities`` per shown slot, ``slate_propensity`` for the whole ranked list; None where the policy
is deterministic and nobody computed them). A feedback row is one user event on one item of one
request. Raw item ids may be int or str; both logs store them as strings, so the two join.
"""

from __future__ import annotations

import json
import math
import time as _time
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from shopformer.errors import RequestError

EVENTS = ("click", "cart", "purchase")

IMPRESSION_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("time", pa.float64(), nullable=False),  # unix seconds
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("policy", pa.string()),
        pa.field("policy_version", pa.string()),
        pa.field("arm", pa.string()),  # set by A/B splitting; None outside an experiment
        pa.field("unit", pa.string()),  # who the split assigned: user id, else session id, else request id
        pa.field("session_items", pa.list_(pa.string())),
        pa.field("candidates", pa.list_(pa.string())),
        pa.field("candidate_scores", pa.list_(pa.float32())),
        pa.field("shown", pa.list_(pa.string())),
        pa.field("propensities", pa.list_(pa.float64())),
        pa.field("slate_propensity", pa.float64()),
        pa.field("filters", pa.string()),  # JSON; "" when none
        pa.field("k", pa.int32()),
    ]
)

FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("time", pa.float64(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),  # one of EVENTS
        pa.field("revenue", pa.float64()),  # 0 when none
    ]
)


def item_ids(values: Sequence[Any] | None) -> list[str]:
    """Raw item ids as strings (an int id 7 and a str id "7" are the same item in the logs)."""
    return [] if values is None else list(map(str, values))


def probabilities(name: str, values: Sequence[float] | None, n: int) -> list[float] | None:
    """``values`` as floats in [0, 1], one per shown slot; None stays None (not computed)."""
    if values is None:
        return None
    out = [float(v) for v in values]
    if len(out) != n:
        raise ValueError(f"{name}: {len(out)} values for {n} shown items")
    if not all(0.0 <= v <= 1.0 for v in out):
        raise ValueError(f"{name}: a probability outside [0, 1] in {out[:5]}")
    return out


def filters_json(filters: Mapping[str, Any] | str | None) -> str:
    """The request's filters as compact JSON with sorted keys; "" when there are none."""
    if not filters:
        return ""
    if isinstance(filters, str):
        return filters
    return json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)


def impression_row(
    *,
    request_id: str,
    model_name: str,
    model_version: str,
    policy: str,
    policy_version: str,
    session_items: Sequence[Any],
    candidates: Sequence[Any],
    candidate_scores: Sequence[float],
    shown: Sequence[Any],
    propensities: Sequence[float] | None = None,
    slate_propensity: float | None = None,
    arm: str | None = None,
    unit: Any = None,
    filters: Mapping[str, Any] | str | None = None,
    k: int | None = None,
    time: float | None = None,
) -> dict[str, Any]:
    """One impression row (a server-side call: a wrong shape is a bug, raised as ValueError)."""
    shown_ids = item_ids(shown)
    candidate_ids = item_ids(candidates)
    scores = [float(s) for s in candidate_scores]
    if len(scores) != len(candidate_ids):
        raise ValueError(f"candidate_scores: {len(scores)} scores for {len(candidate_ids)} candidates")
    if slate_propensity is not None and not 0.0 <= float(slate_propensity) <= 1.0:
        raise ValueError(f"slate_propensity: {slate_propensity} is not a probability")
    return {
        "request_id": str(request_id),
        "time": _time.time() if time is None else float(time),
        "model_name": str(model_name),
        "model_version": str(model_version),
        "policy": str(policy),
        "policy_version": str(policy_version),
        "arm": None if arm is None else str(arm),
        "unit": None if unit is None else str(unit),
        "session_items": item_ids(session_items),
        "candidates": candidate_ids,
        "candidate_scores": scores,
        "shown": shown_ids,
        "propensities": probabilities("propensities", propensities, len(shown_ids)),
        "slate_propensity": None if slate_propensity is None else float(slate_propensity),
        "filters": filters_json(filters),
        "k": len(shown_ids) if k is None else int(k),
    }


def feedback_row(
    *, request_id: str, item_id: Any, event: str, revenue: float | None = 0.0, time: float | None = None
) -> dict[str, Any]:
    """One feedback row from a client's values; a bad value is a :class:`RequestError` naming its field."""
    if event not in EVENTS:
        raise RequestError("event", f"{event!r} is not one of {', '.join(EVENTS)}")
    try:
        amount = 0.0 if revenue is None else float(revenue)
    except (TypeError, ValueError):
        raise RequestError("revenue", f"{revenue!r} is not a number") from None
    if not math.isfinite(amount):
        raise RequestError("revenue", f"{revenue!r} is not a finite number")
    if not str(request_id):
        raise RequestError("request_id", "empty")
    return {
        "request_id": str(request_id),
        "time": _time.time() if time is None else float(time),
        "item_id": str(item_id),
        "event": event,
        "revenue": amount,
    }
