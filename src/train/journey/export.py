"""``journey.onnx``: the journey heads as ONNX, written into a bundle beside the next-item encoder.

Inputs are the encoder's token channels (``item_ids``, ``event_types``, ``gap_buckets`` int64 [B, L],
left-padded; batch and length dynamic); outputs are the probabilities after each history's last event:
``event_probs`` float32 [B, C] (sums to 1 over the event types of ``event_classes``), ``conversion``
[B] and ``abandonment`` [B]. The export fails unless onnxruntime agrees with torch on real histories.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shopformer.models.journey.model import JourneyModel
from shopformer.serve.bundle import JOURNEY
from shopformer.serve.onnx_session import onnx_session
from shopformer.train.onnx_export import (
    ITEM_IDS,
    ExportError,
    MethodGraph,
    encoder_inputs,
    export_encoder,
    parity,
    random_histories,
    run_onnx,
    run_torch,
)

OUTPUTS = ("event_probs", "conversion", "abandonment")


def journey_onnx(session, histories: dict[str, np.ndarray], min_len: int = 1) -> list[np.ndarray]:
    """The three outputs of a ``journey.onnx`` session for ``histories`` (by input name)."""
    return run_onnx(session, histories, OUTPUTS, min_len, batch=512)


def journey_torch(model: JourneyModel, histories: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The same three outputs from ``model.journey`` in torch."""
    return run_torch(model.journey, encoder_inputs(model), histories, batch=512)


def export_journey(
    model: JourneyModel,
    directory: Path,
    max_len: int,
    event_vocab: Sequence[str],
    histories: dict[str, np.ndarray] | None = None,
    opset: int | None = None,
    labels: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``directory/journey.onnx``, check it against torch; returns the manifest's ``journey`` entry."""
    model = model.eval()
    if len(event_vocab) - 1 != model.n_event_classes:
        raise ExportError(
            f"the event vocabulary has {len(event_vocab) - 1} types, "
            f"the journey model {model.n_event_classes}"
        )
    graph = MethodGraph(model, "journey")
    exported = export_encoder(model, directory / JOURNEY, max_len, opset, graph, OUTPUTS)
    real = bool(histories) and len(histories.get(ITEM_IDS, ())) > 0
    if real:
        histories = {
            name: values[:, -max_len:] for name, values in histories.items() if name in exported.inputs
        }
    else:
        histories = random_histories(model, 64, max_len, pad=True)
    session = onnx_session(directory / JOURNEY)
    diff = parity(
        journey_onnx(session, histories, exported.min_len),
        journey_torch(model, histories),
        "the journey heads in ONNX",
    )
    return {
        "journey": {
            "file": JOURNEY,
            "inputs": exported.inputs,
            "outputs": list(OUTPUTS),
            "event_classes": list(event_vocab[1:]),
            "min_len": exported.min_len,
            "max_len": exported.max_len,
            "opset": exported.opset,
            "labels": labels or {},
            "parity_max_abs_diff": diff,
            "parity_n": int(len(histories[ITEM_IDS])),
            "parity_histories": "test prefixes" if real else "random",
            "export_seconds": round(exported.seconds, 3),
        }
    }


def journey_exporter(
    model: JourneyModel,
    histories: dict[str, np.ndarray] | None,
    event_vocab: Sequence[str],
    max_len: int,
    opset: int | None = None,
    dm: Any = None,
) -> Callable[[Path], dict[str, Any]]:
    """The ``extra_exports`` hook of :func:`shopformer.train.export.export_bundle` for a journey model."""
    config = getattr(dm, "label_config", None)
    labels = (
        {
            "censor_minutes": config.censor_minutes,
            "purchase_event": config.purchase_event,
            "cart_event": config.cart_event,
        }
        if config is not None
        else {}
    )

    def write(directory: Path) -> dict[str, Any]:
        return export_journey(model, directory, max_len, event_vocab, histories, opset, labels)

    return write
