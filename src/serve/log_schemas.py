"""The two serving logs' Arrow schemas and the helpers that build one row of each from plain values.

An impression row is one answered request: what the policy considered (``candidates``, best first, with
their scores), what it showed (``shown``, position = index + 1) and with which probability
(``propensities`` per shown slot, ``slate_propensity`` for the whole ranked list; None where the policy
is deterministic and nobody computed them). A feedback row is one user event on one item of one
request. Raw item ids may be int or str; both logs store them as strings, so the two join. Rows hold
the ids as the request gave them: :func:`record_batch` turns them into text column by column, off
the request path (a row's ids are a hundred Python objects: converting them one by one on the request
path cost more than the policy's draw).
"""

from __future__ import annotations

import itertools
import json
import math
import time as _time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
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


def item_ids(values: Sequence[Any] | None) -> tuple[Any, ...]:
    """Raw item ids as given (a copy); the log stores them as text (an int 7 and a str "7" are one item).

    Rows hold tuples, not lists: a tuple of ints or strings and a dict of such values drop out of the
    cyclic GC at its first pass, so the second's worth of rows waiting for the writer never reaches the
    older generations (measured: with lists, the GC passes they caused cost about 15 % of a logging
    server's throughput)."""
    return () if values is None else tuple(values)


STRING_LIST = pa.list_(pa.string())
_CONVERSION_ERRORS = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    OverflowError,
    TypeError,
)


def record_batch(rows: Sequence[Mapping[str, Any] | tuple], schema: pa.Schema) -> pa.RecordBatch:
    """Rows (dicts, or tuples in the schema's order) as one Arrow batch of ``schema``, built column by
    column; ids become text.

    Raises (an Arrow error, TypeError or KeyError) when a row does not fit the schema."""
    arrays = []
    for i, field in enumerate(schema):
        column = [row[i] if type(row) is tuple else row[field.name] for row in rows]
        if field.type == STRING_LIST:
            arrays.append(_string_lists(column))
        elif field.type == pa.string():
            arrays.append(_strings(column))
        else:
            arrays.append(pa.array(column, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _strings(values: list[Any]) -> pa.Array:
    """Text; ints (ids) as their decimal digits, None stays null."""
    try:
        return pa.array(values, type=pa.string())
    except _CONVERSION_ERRORS:
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _string_lists(lists: list[Any]) -> pa.Array:
    """A list<string> column from lists of ids: flattened, converted in one Arrow call where every id
    is an int or every id a str (else with ``str``), and cut back into lists by their offsets."""
    if any(v is None for v in lists):
        return pa.array([None if v is None else [str(x) for x in v] for v in lists], type=STRING_LIST)
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum([len(v) for v in lists], out=offsets[1:])
    flat = list(itertools.chain.from_iterable(lists))
    try:
        # the type named from the first id: Arrow's conversion is 2x faster than with inference
        values = pa.array(flat, type=pa.int64() if flat and type(flat[0]) is int else pa.string())
        if values.type != pa.string():
            values = values.cast(pa.string())
    except _CONVERSION_ERRORS:
        values = pa.array([str(x) for x in flat], type=pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def probabilities(name: str, values: Sequence[float] | None, n: int) -> tuple[float, ...] | None:
    """``values`` as floats in [0, 1], one per shown slot; None stays None (not computed)."""
    if values is None:
        return None
    out = tuple(map(float, values))
    if len(out) != n:
        raise ValueError(f"{name}: {len(out)} values for {n} shown items")
    if out and (min(out) < 0.0 or max(out) > 1.0 or math.isnan(sum(out))):
        raise ValueError(f"{name}: a probability outside [0, 1] in {list(out[:5])}")
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
    """One impression row (a server-side call: a wrong shape is a bug, raised as ValueError); its ids
    are the raw ones, which :func:`record_batch` writes as text."""
    shown_ids = item_ids(shown)
    candidate_ids = item_ids(candidates)
    scores = tuple(candidate_scores)  # numbers: the writer's Arrow conversion refuses anything else
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
