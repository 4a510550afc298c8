"""Journey scoring (no torch): a bundle's ``journey.onnx`` behind the recommender's session encoding.

A session is scored after its last event: probabilities of the next event type (summing to 1 over
``event_classes``), of the session converting (a purchase follows), and of its cart being abandoned.
Abandonment is reported only when the session holds an open cart (a cart event after its latest
purchase), the only prefixes that head was trained on; otherwise it is None. Sessions are encoded
exactly as for ``/recommend`` (:class:`~shopformer.serve.encoding.SessionEncoder`): unknown raw ids
are dropped and reported, and a session without any known item gets no probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shopformer.data.journey.labels import open_cart_flags
from shopformer.errors import RequestError
from shopformer.serve.bundle import BundleError, BundleFiles
from shopformer.serve.encoding import SessionEncoder
from shopformer.serve.onnx_session import onnx_session
from shopformer.serve.sessions import Session, event_names, parse_session

OUTPUTS = ("event_probs", "conversion", "abandonment")


class NoJourneyModel(RequestError):
    """The bundle being served has no ``journey.onnx``."""


@dataclass
class JourneyScore:
    """One session's journey probabilities (None when no item of the session is known)."""

    event_probs: dict[str, float] | None = None
    next_event_type: str | None = None
    conversion: float | None = None
    abandonment: float | None = None
    cart_open: bool = False
    unknown_items: list[Any] = field(default_factory=list)


class JourneyScorer:
    """The ONNX session of ``journey.onnx`` and what its manifest entry says about it."""

    def __init__(self, bundle: BundleFiles, threads: int = 1, encoder_inputs: Sequence[str] = ()) -> None:
        spec = bundle.manifest.get("journey")
        if not isinstance(spec, dict) or not spec.get("event_classes"):
            raise BundleError(f"bundle {bundle.directory}: journey.onnx without a 'journey' manifest entry")
        self.classes = [str(c) for c in spec["event_classes"]]
        self.min_len = max(1, int(spec.get("min_len", 1)))
        labels = spec.get("labels") or {}
        self.cart_event = str(labels.get("cart_event", "cart"))
        self.purchase_event = str(labels.get("purchase_event", "purchase"))
        try:
            self.session = onnx_session(bundle.journey_path, threads)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BundleError(f"bundle {bundle.directory}: cannot load journey.onnx ({exc})") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        outputs = {o.name for o in self.session.get_outputs()}
        if not set(OUTPUTS) <= outputs:
            raise BundleError(
                f"bundle {bundle.directory}: journey.onnx outputs {sorted(outputs)}, need {OUTPUTS}"
            )
        if encoder_inputs and set(self.inputs) != set(encoder_inputs):
            raise BundleError(
                f"bundle {bundle.directory}: journey.onnx inputs {self.inputs} differ from the encoder's "
                f"{list(encoder_inputs)}"
            )

    def run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities for left-padded int64 inputs [B, L]: event types [B, C], conversion, abandonment."""
        feeds = {}
        for name in self.inputs:
            array = np.asarray(inputs[name], dtype=np.int64)
            if array.shape[1] < self.min_len:
                array = np.pad(array, ((0, 0), (self.min_len - array.shape[1], 0)))  # pad ids are 0
            feeds[name] = np.ascontiguousarray(array)
        event, conversion, abandonment = self.session.run(list(OUTPUTS), feeds)
        return event.astype(np.float64), conversion.astype(np.float64), abandonment.astype(np.float64)

    def cart_open(self, event_types: Sequence[str] | None) -> bool:
        """Does a session with these event types (oldest first) hold an open cart after its last event?"""
        if not event_types:
            return False
        names = np.asarray(list(event_types), dtype=object)
        codes = np.where(names == self.cart_event, 1, np.where(names == self.purchase_event, 2, 0))
        starts = np.zeros(len(codes), dtype=bool)
        starts[0] = True
        return bool(open_cart_flags(codes, starts, cart_id=1, purchase_id=2)[-1])

    def score(
        self, encoder: SessionEncoder, sessions: Sequence[Session | Mapping[str, Any]]
    ) -> list[JourneyScore]:
        """Journey probabilities for every session, with one encoder-input build and one ONNX run."""
        # the same request checks as /recommend
        sessions = [s if not isinstance(s, dict) else parse_session(s, i) for i, s in enumerate(sessions)]
        for i, s in enumerate(sessions):
            _check_order(s.timestamps, i)
        encoded = encoder.encode(sessions)
        out = [JourneyScore(unknown_items=unknown) for unknown in encoded.unknown]
        if not encoded.rows.size:
            return out
        event, conversion, abandonment = self.run(encoded.inputs)
        for row, r in enumerate(encoded.rows):
            score, s = out[r], sessions[r]
            score.event_probs = dict(zip(self.classes, event[row].tolist(), strict=True))
            score.next_event_type = self.classes[int(event[row].argmax())]
            score.conversion = float(conversion[row])
            score.cart_open = self.cart_open(event_names(s))
            score.abandonment = float(abandonment[row]) if score.cart_open else None
        return out


def _check_order(timestamps: Sequence[int] | None, i: int) -> None:
    if timestamps is None or len(timestamps) < 2:
        return
    try:
        stamps = np.asarray(timestamps, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise RequestError((i, "timestamps"), "must be integer unix seconds") from None
    if (np.diff(stamps) < 0).any():
        raise RequestError((i, "timestamps"), "must not decrease: send the session's events oldest first")
