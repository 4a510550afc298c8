"""Sessions to encoder inputs: raw ids to internal ids, event-type and gap-bucket channels, left padding.

Raw ids the catalogue does not know are dropped from the history and reported back; a session with
no known item left is not encoded at all (an encoder run on an empty history gives an arbitrary vector).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shopformer.data.features import GAP_PAD, gap_buckets
from shopformer.data.vocab import PAD, PAD_TOKEN, encode_events
from shopformer.errors import RequestError
from shopformer.serve.rules import ItemAttributes
from shopformer.serve.sessions import Session, check_session, event_names

ITEM_IDS, EVENT_TYPES, GAP_BUCKETS = "item_ids", "event_types", "gap_buckets"
ENCODER_INPUTS = (ITEM_IDS, EVENT_TYPES, GAP_BUCKETS)


@dataclass
class EncodedSessions:
    """Encoder inputs for the sessions that have known items (left-padded int64 [B, L])."""

    rows: np.ndarray  # position in the request of each encoded row
    inputs: dict[str, np.ndarray]
    seen: list[np.ndarray]  # every known internal id of each row's full history
    unknown: list[list[Any]]  # per request (all of them, not just encoded rows)


class SessionEncoder:
    """Builds the inputs ``inputs`` (a subset of :data:`ENCODER_INPUTS`) of one bundle's encoders."""

    def __init__(
        self,
        attributes: ItemAttributes,
        inputs: Sequence[str],
        max_len: int,
        min_len: int = 1,
        event_vocab: Sequence[str] = (),
    ) -> None:
        self.attributes = attributes
        self.inputs = list(inputs)
        self.max_len, self.min_len = max_len, min_len
        self.event_vocab = list(event_vocab)

    def encode(self, sessions: Sequence[Session]) -> EncodedSessions:
        """Map raw ids to internal ids (one vocabulary lookup for the whole batch), drop unknown ones,
        compute event-type and gap-bucket channels, keep the last ``max_len`` and left-pad."""
        for i, s in enumerate(sessions):
            check_session(s, i)
        lengths = np.array([len(s.items) for s in sessions], dtype=np.int64)
        flat = [item for s in sessions for item in s.items]
        codes = self.attributes.encode(flat)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        rows, channels, seen, unknown = [], [], [], []
        for i, s in enumerate(sessions):
            row_codes = codes[bounds[i] : bounds[i + 1]]
            known = row_codes > 0
            all_known = bool(known.all())  # the usual case: skip a Python pass over the session
            unknown.append(
                [] if all_known else [item for item, ok in zip(s.items, known, strict=True) if not ok]
            )
            if not all_known and not known.any():
                continue
            rows.append(i)
            seen.append(np.unique(row_codes[known]))
            channels.append(self._channels(s, row_codes, known, i))
        inputs = self._pad(channels)
        return EncodedSessions(np.array(rows, dtype=np.int64), inputs, seen, unknown)

    def fit(self, array: np.ndarray) -> np.ndarray:
        """Left-padded int64 inputs cut to the last ``max_len`` columns, left-padded to ``min_len``."""
        array = array[:, -self.max_len :]
        if array.shape[1] < self.min_len:
            array = np.pad(
                array, ((0, 0), (self.min_len - array.shape[1], 0))
            )  # pad ids are 0 in every channel
        return np.ascontiguousarray(array)

    def _channels(self, s: Session, codes: np.ndarray, known: np.ndarray, i: int) -> dict[str, np.ndarray]:
        keep = slice(max(0, int(known.sum()) - self.max_len), None)  # the most recent max_len items
        out = {ITEM_IDS: codes[known][keep]}
        if EVENT_TYPES in self.inputs:
            out[EVENT_TYPES] = self._event_codes(s, i)[known][keep]
        if GAP_BUCKETS in self.inputs:
            if s.timestamps is None:
                raise RequestError(
                    (i, "timestamps"), "this model uses time gaps: send a unix timestamp per item"
                )
            try:
                stamps = np.asarray(s.timestamps, dtype=np.int64)[known]
            except (TypeError, ValueError, OverflowError):
                raise RequestError((i, "timestamps"), "must be integer unix seconds") from None
            starts = np.zeros(stamps.size, dtype=bool)
            starts[0] = True
            out[GAP_BUCKETS] = gap_buckets(stamps, starts)[keep]  # gaps between known events, as in training
        return out

    def _event_codes(self, s: Session, i: int) -> np.ndarray:
        names = event_names(s)
        codes = encode_events(names, self.event_vocab).astype(np.int64)
        bad = [name for name, code in zip(names, codes, strict=True) if code == PAD]
        if bad:
            known = ", ".join(e for e in self.event_vocab if e != PAD_TOKEN)
            what = "unknown event type" if s.event_types is not None else "required (no default type)"
            raise RequestError((i, "event_types"), f"{what} {bad[0]!r}; this model knows: {known}")
        return codes

    def _pad(self, channels: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        width = max([self.min_len, *(len(c[ITEM_IDS]) for c in channels)])
        out = {}
        for name in self.inputs:
            pad = GAP_PAD if name == GAP_BUCKETS else PAD
            array = np.full((len(channels), width), pad, dtype=np.int64)
            for row, c in enumerate(channels):
                values = c[name]
                array[row, width - len(values) :] = values
            out[name] = array
        return out


def length_groups(lengths: np.ndarray, max_rows: int = 8, slack: float = 1.15) -> list[np.ndarray]:
    """Row indices grouped by length (shortest first): a group holds at most ``max_rows`` rows, the
    longest at most ``slack`` times the shortest. One group when the lengths are already close."""
    if len(lengths) <= 1 or lengths.max() <= slack * max(int(lengths.min()), 1):
        return [np.arange(len(lengths))]
    order = np.argsort(lengths, kind="stable")
    groups, start = [], 0
    for end in range(1, len(order) + 1):
        if (
            end == len(order)
            or end - start == max_rows
            or lengths[order[end]] > slack * max(int(lengths[order[start]]), 1)
        ):
            groups.append(order[start:end])
            start = end
    return groups
