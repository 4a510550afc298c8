"""The session request: raw item ids oldest first, optional event types and timestamps, and options.

Shared by recommendation and journey scoring, which check a request the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shopformer.errors import RequestError
from shopformer.serve.rules import Filters

DEFAULT_EVENT_TYPE = "view"  # what the data schema assumes when events carry no type


@dataclass(frozen=True)
class Session:
    """One request: raw item ids oldest first, optional event types and timestamps, and options."""

    items: Sequence[Any]
    event_types: Sequence[str] | None = None
    timestamps: Sequence[int] | None = None
    k: int = 10
    exclude_seen: bool = True
    filters: Mapping[str, Any] | Filters | None = None


def parse_session(spec: Mapping[str, Any], i: int) -> Session:
    """The :class:`Session` of a request mapping (e.g. an HTTP body); ``i``: its batch position."""
    unknown = sorted(set(spec) - set(Session.__dataclass_fields__))
    if unknown:
        raise RequestError((i, unknown[0]), "unknown field")
    if "items" not in spec:
        raise RequestError((i, "items"), "required")
    return Session(**spec)


def check_session(s: Session, i: int) -> None:
    """Refuse a session whose history is not a non-empty list, or whose channels differ in length."""
    if isinstance(s.items, str | bytes) or not isinstance(s.items, Sequence | np.ndarray):
        raise RequestError((i, "items"), "must be a list of raw item ids, oldest first")
    if len(s.items) == 0:
        raise RequestError((i, "items"), "empty history: send at least one item id")
    for name in ("event_types", "timestamps"):
        values = getattr(s, name)
        if values is not None and len(values) != len(s.items):
            raise RequestError((i, name), f"has {len(values)} values for {len(s.items)} items")


def check_k(k: Any, loc: tuple) -> None:
    """Refuse a ``k`` that is not a positive integer."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise RequestError(loc, f"must be a positive integer, got {k!r}")


def event_names(s: Session) -> list[str]:
    """The session's event type names, :data:`DEFAULT_EVENT_TYPE` for each item when it sends none."""
    return [DEFAULT_EVENT_TYPE] * len(s.items) if s.event_types is None else list(s.event_types)
