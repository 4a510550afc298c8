"""Customer-journey labels, torch-free (training and serving share them).

At every prefix position ``t`` of a session (features: events ``<= t`` only), three labels:

- **next event type**: the type of event ``t + 1`` of the same session, as a class index
  (event id - 1, so class 0 is the first real type). Undefined at the session's last event
  (:data:`IGNORE`): the head predicts the next step *given that the session goes on*.
- **conversion**: 1 if the session holds a purchase *after* ``t``, else 0. A censored session
  (one that may continue past the end of the data window) with no purchase after ``t`` is
  unknown (:data:`IGNORE`), never a negative; an observed purchase is a positive either way.
- **abandonment**: defined only where the session holds an *open cart* at ``t`` (a cart event
  after the latest purchase, up to ``t``): 1 if no purchase follows in the session, 0 if one
  does; censored without a later purchase: unknown.

A session is censored when its last event lies less than ``censor_minutes`` before the window end:
with sessions cut by an inactivity gap of that length, an unseen later event could still join it.
Sessions that *start* before the window (left-censoring) keep their labels, which look forward
only; their early context is missing, as it would be at serving time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shopformer.errors import DataError

IGNORE = -1
PARTS = {"train": 0, "valid": 1, "test": 2}
UNUSED = -1  # a session in no part (the censoring zone at the window end)


@dataclass(frozen=True)
class JourneyLabelConfig:
    """How labels are made. ``window_end``: unix seconds or a date-time string; None = the last event."""

    censor_minutes: float = 30.0
    window_end: Any = None
    purchase_event: str = "purchase"
    cart_event: str = "cart"

    def __post_init__(self) -> None:
        if self.censor_minutes < 0:
            raise DataError(f"journey labels: censor_minutes must be >= 0, got {self.censor_minutes}")


@dataclass
class JourneyLabels:
    """Per-event labels (flat, aligned with the processed dataset's arrays) and what they are made of."""

    next_event: np.ndarray  # int64 class index, IGNORE where undefined
    conversion: np.ndarray  # int8 1 / 0 / IGNORE
    abandonment: np.ndarray  # int8 1 / 0 / IGNORE
    censored: np.ndarray  # bool: the event's session may continue past the window end
    open_cart: np.ndarray  # bool: the session holds an open cart at this event
    run_start: np.ndarray  # int64 flat index of the first event of the event's session
    facts: dict[str, Any] = field(default_factory=dict)

    def defined(self) -> np.ndarray:
        """Events with at least one defined label."""
        return (self.next_event != IGNORE) | (self.conversion != IGNORE) | (self.abandonment != IGNORE)


def session_starts(seq: np.ndarray, session: np.ndarray) -> np.ndarray:
    """True at the first event of every session run: where the sequence or the session id changes.

    Events are sorted by (sequence, time), so a session is a contiguous run of one sequence.
    """
    seq, session = np.asarray(seq), np.asarray(session)
    starts = np.ones(len(seq), dtype=bool)
    starts[1:] = (seq[1:] != seq[:-1]) | (session[1:] != session[:-1])
    return starts


def open_cart_flags(events: np.ndarray, starts: np.ndarray, cart_id: int, purchase_id: int) -> np.ndarray:
    """Per event: does its session hold a cart event after its latest purchase (both up to here)?"""
    events = np.asarray(events)
    index = np.arange(len(events))
    run_start = np.maximum.accumulate(np.where(starts, index, 0))
    last_cart = np.maximum.accumulate(np.where(events == cart_id, index, -1))
    last_purchase = np.maximum.accumulate(np.where(events == purchase_id, index, -1))
    return (last_cart >= run_start) & (last_cart > last_purchase)


def window_end_seconds(value: Any, ts: np.ndarray) -> int:
    """The end of the data window in unix seconds: ``value`` when given, else the last event time."""
    if value is None:
        return int(ts.max())
    if isinstance(value, int | float | np.integer):
        return int(value)
    try:
        return int(pd.Timestamp(str(value), tz="UTC").timestamp())
    except ValueError:
        raise DataError(f"journey labels: cannot parse window_end {value!r}") from None


def journey_labels(
    event: np.ndarray,
    ts: np.ndarray,
    starts: np.ndarray,
    event_vocab: list[str],
    config: JourneyLabelConfig = JourneyLabelConfig(),
) -> JourneyLabels:
    """Labels at every event; ``starts`` marks the first event of each session (:func:`session_starts`)."""
    if config.purchase_event not in event_vocab:
        raise DataError(
            f"journey labels need a '{config.purchase_event}' event type; this dataset has "
            f"{[e for e in event_vocab[1:]]} (set journey labels.purchase_event)"
        )
    event = np.asarray(event).astype(np.int64)
    ts = np.asarray(ts).astype(np.int64)
    n = len(event)
    if n == 0:
        raise DataError("journey labels: no events")
    index = np.arange(n)
    starts = np.asarray(starts, dtype=bool)
    run = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], n] - 1
    run_last = last[run]

    next_event = np.where(index < run_last, np.r_[event[1:], 0] - 1, IGNORE)

    purchase_id = event_vocab.index(config.purchase_event)
    cart_id = event_vocab.index(config.cart_event) if config.cart_event in event_vocab else -1
    purchases = np.cumsum(event == purchase_id)
    purchase_after = purchases[run_last] > purchases

    end = window_end_seconds(config.window_end, ts)
    # Unseen events come after ``end``; one joins the session iff it is within the gap of its last event.
    censored_run = end - ts[last] < config.censor_minutes * 60
    censored = censored_run[run]
    conversion = np.where(purchase_after, 1, np.where(censored, IGNORE, 0)).astype(np.int8)

    open_cart = open_cart_flags(event, starts, cart_id, purchase_id) if cart_id > 0 else np.zeros(n, bool)
    abandonment = np.where(
        open_cart, np.where(purchase_after, 0, np.where(censored, IGNORE, 1)), IGNORE
    ).astype(np.int8)
    facts = {
        "sessions": int(len(first)),
        "censored_sessions": int(censored_run.sum()),
        "window_end": end,
        "window_end_utc": str(pd.Timestamp(end, unit="s", tz="UTC")),
        "censor_minutes": config.censor_minutes,
    }
    return JourneyLabels(
        next_event.astype(np.int64), conversion, abandonment, censored, open_cart, first[run], facts
    )
