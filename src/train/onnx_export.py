"""ONNX export of a model's graph (batch and sequence length dynamic) and its parity check against torch.

Used for every ONNX file of a bundle: the next-item encoder (``encoder.onnx``) and the journey heads
(``journey.onnx``, :mod:`shopformer.train.journey.export`). Sessions come from the one factory in
:mod:`shopformer.serve.onnx_session`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from shopformer.errors import UserError
from shopformer.models.base import SequenceRecommender

ITEM_IDS = "item_ids"
CHANNELS = ("event_types", "gap_buckets")  # optional encoder inputs, in this order
OUTPUT = "query"
PARITY_TOLERANCE = 1e-3  # ONNX vs torch outputs on the check histories; beyond it the export fails
EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")


class ExportError(UserError):
    """A model or an option that cannot be exported; the message says why."""


@dataclass(frozen=True)
class EncoderExport:
    """What :func:`export_encoder` produced."""

    inputs: list[str]
    opset: int
    min_len: int
    max_len: int
    seconds: float


class MethodGraph(nn.Module):
    """``forward(...) = model.<method>(...)``: the function an ONNX graph computes (``encode`` for the
    encoder, ``journey`` for the journey heads), over the encoder's token channels."""

    def __init__(self, model: SequenceRecommender, method: str = "encode") -> None:
        super().__init__()
        self.model, self.method = model, method

    def forward(
        self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None
    ) -> Tensor | tuple[Tensor, ...]:
        return getattr(self.model, self.method)(item_ids, event_types, gap_buckets)


def encoder_inputs(model: SequenceRecommender) -> list[str]:
    """``item_ids`` plus the token channels the model was built with (event types, time-gap buckets)."""
    embed = getattr(model, "embed", None)
    used = {
        "event_types": getattr(embed, "events", None) is not None,
        "gap_buckets": getattr(embed, "gaps", None) is not None,
    }
    return [ITEM_IDS, *(name for name in CHANNELS if used[name])]


def channel_sizes(model: SequenceRecommender) -> dict[str, int]:
    """Vocabulary size of every encoder input (valid ids are ``0 .. size-1``)."""
    embed = getattr(model, "embed", None)
    sizes = {ITEM_IDS: model.n_items}
    if getattr(embed, "events", None) is not None:
        sizes["event_types"] = embed.events.num_embeddings
    if getattr(embed, "gaps", None) is not None:
        sizes["gap_buckets"] = embed.gaps.num_embeddings
    return sizes


def random_histories(
    model: SequenceRecommender, batch: int, length: int, seed: int = 0, pad: bool = False
) -> dict[str, np.ndarray]:
    """Random int64 values for every encoder input; ``pad`` left-pads row ``i`` by ``i % length``."""
    rng = np.random.default_rng(seed)
    sizes = channel_sizes(model)
    out = {name: rng.integers(1, max(size, 2), (batch, length)) for name, size in sizes.items()}
    if pad:
        n_pad = np.arange(batch)[:, None] % length
        real = np.arange(length)[None, :] >= n_pad
        out = {name: np.where(real, values, 0) for name, values in out.items()}
    return {name: values.astype(np.int64) for name, values in out.items() if name in encoder_inputs(model)}


def export_encoder(
    model: SequenceRecommender,
    path: Path,
    max_len: int,
    opset: int | None = None,
    graph: nn.Module | None = None,
    outputs: Sequence[str] = (OUTPUT,),
) -> EncoderExport:
    """``model.encode`` (or ``graph``, a module over the same inputs with ``outputs``) as ONNX with
    dynamic batch and sequence length (1.. or 2..``max_len``)."""
    inputs = encoder_inputs(model)
    graph = (graph or MethodGraph(model.eval())).eval()
    started = time.perf_counter()
    errors = []
    for min_len in (1, 2):
        if max_len < min_len:
            break
        try:
            torch_export(graph, model, path, inputs, min_len, max_len, opset, outputs)
        except Exception as exc:  # the exporter raises many types; the message is what matters
            cause = exc.__cause__ or exc
            if isinstance(cause, OSError):  # the disk, not the graph: the bundle writer says it
                raise cause from None
            errors.append(first_line(cause))
            continue
        used = {op.domain: op.version for op in onnx.load(str(path), load_external_data=False).opset_import}
        return EncoderExport(
            inputs, int(used.get("", opset or 0)), min_len, max_len, time.perf_counter() - started
        )
    raise ExportError(
        f"{type(model).__name__}: torch.onnx.export failed: {errors[-1] if errors else 'max_len < 1'}"
    )


def torch_export(
    graph: nn.Module,
    model: SequenceRecommender,
    path: Path,
    inputs: list[str],
    min_len: int,
    max_len: int,
    opset: int | None,
    outputs: Sequence[str] = (OUTPUT,),
) -> None:
    batch = torch.export.Dim("batch")
    # An example longer than the minimum and a batch above 1, so that neither gets specialised.
    length = max(min_len, min(max_len, 5))
    example = random_histories(model, 3, length)
    if max_len > min_len:
        seq = torch.export.Dim("seq_len", min=min_len, max=max_len)
        shapes = {name: {0: batch, 1: seq} for name in inputs}
    else:
        shapes = {name: {0: batch} for name in inputs}
    options = {} if opset is None else {"opset_version": int(opset)}
    tensors = {name: torch.from_numpy(example[name]) for name in inputs}
    with quiet_exporter():
        torch.onnx.export(
            graph,
            (tensors.pop(ITEM_IDS),),
            str(path),
            kwargs=tensors,  # the channels the model uses, by name
            input_names=inputs,
            output_names=list(outputs),
            dynamic_shapes=shapes,
            dynamo=True,
            external_data=False,
            verbose=False,
            **options,
        )


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporter's chatter (progress, optimiser INFO logs, deprecations) is not the user's business.

    Under Hydra's job logging the root logger prints INFO to stdout, where the JSON line goes.
    """
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def left_pad(values: np.ndarray, length: int) -> np.ndarray:
    """``values`` [N, L] left-padded with 0 to ``length`` columns when shorter."""
    short = length - values.shape[1]
    return np.pad(values, ((0, 0), (short, 0))) if short > 0 else values


def run_onnx(
    session, histories: dict[str, np.ndarray], outputs: Sequence[str], min_len: int = 1, batch: int = 256
) -> list[np.ndarray]:
    """The ``outputs`` of an onnxruntime ``session`` for ``histories`` (by input name), in batches;
    histories shorter than ``min_len`` are left-padded to it."""
    names = [i.name for i in session.get_inputs()]
    feeds = {name: left_pad(np.asarray(histories[name], dtype=np.int64), min_len) for name in names}
    n = len(feeds[names[0]])
    parts = [
        session.run(list(outputs), {k: v[i : i + batch] for k, v in feeds.items()})
        for i in range(0, n, batch)
    ]
    return [np.concatenate([p[j] for p in parts]) for j in range(len(outputs))] if parts else []


@torch.no_grad()
def run_torch(
    fn: Callable[..., Tensor | tuple[Tensor, ...]],
    inputs: Sequence[str],
    histories: dict[str, np.ndarray],
    batch: int = 256,
) -> list[np.ndarray]:
    """``fn(item_ids, **channels)`` on ``histories`` in batches: its output(s) as float32 arrays."""
    n = len(histories[ITEM_IDS])
    parts = []
    for i in range(0, n, batch):
        tensors = {
            name: torch.as_tensor(np.asarray(histories[name][i : i + batch], dtype=np.int64))
            for name in inputs
        }
        out = fn(tensors.pop(ITEM_IDS), **tensors)
        parts.append([t.float().numpy() for t in (out if isinstance(out, tuple) else (out,))])
    return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))] if parts else []


def encode_onnx(session, histories: dict[str, np.ndarray], min_len: int = 1) -> np.ndarray:
    """Queries of an ONNX encoder session for ``histories``."""
    return run_onnx(session, histories, [OUTPUT], min_len)[0]


def encode_torch(model: SequenceRecommender, histories: dict[str, np.ndarray]) -> np.ndarray:
    """Queries of ``model.encode`` for ``histories`` (numpy int arrays by input name)."""
    return run_torch(model.encode, encoder_inputs(model), histories)[0]


def parity(onnx_outputs: list[np.ndarray], torch_outputs: list[np.ndarray], what: str) -> float:
    """Largest absolute difference between the two; :class:`ExportError` beyond ``PARITY_TOLERANCE``."""
    diff = max(float(np.abs(a - b).max()) for a, b in zip(onnx_outputs, torch_outputs, strict=True))
    if not diff <= PARITY_TOLERANCE:
        n = len(onnx_outputs[0])
        raise ExportError(
            f"{what} differs from torch by {diff:.2e} (> {PARITY_TOLERANCE:g}) on {n} histories; "
            "not writing a wrong bundle"
        )
    return diff


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
