"""A trained model as a serving bundle (the format of :mod:`shopformer.serve.bundle`).

The bundle holds the encoder as ONNX (batch and sequence length dynamic), the item vector table,
a FAISS index over it with its measured recall, the item vocabulary with attributes, a manifest
with the sha256 of every file, and whatever the task adds (``extra_exports``, e.g. ``journey.onnx``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from shopformer.models.base import SequenceRecommender
from shopformer.provenance import git_commit
from shopformer.serve.bundle import ENCODER, INDEX, ITEMS, VOCAB, write_manifest
from shopformer.serve.index import build_index, measure_recall, write_index
from shopformer.serve.onnx_session import onnx_session
from shopformer.train.bundle_writer import check_target, staged_bundle
from shopformer.train.onnx_export import (
    CHANNELS,
    ITEM_IDS,
    EncoderExport,
    ExportError,
    encode_onnx,
    encode_torch,
    encoder_inputs,
    export_encoder,
    parity,
    random_histories,
)

MAX_ITEM_TABLE_BYTES = 4 << 30


def eval_histories(dm, split: str = "test", limit: int = 1000) -> dict[str, np.ndarray]:
    """Up to ``limit`` evaluation histories of a set-up datamodule (evenly spread), by encoder input name."""
    dataset = dm.test_set if split == "test" else dm.valid_set
    n = len(dataset)
    if n == 0 or limit <= 0:
        return {}
    picks = np.unique(np.linspace(0, n - 1, min(limit, n)).astype(np.int64)).tolist()
    batch = dataset.__getitems__(picks)
    return {name: batch[name].numpy() for name in (ITEM_IDS, *CHANNELS) if name in batch}


def vocab_table(item_vocab: pd.DataFrame) -> pa.Table:
    """``item`` (int64, 1..N-1, in order), ``item_id`` (raw), then the item attributes."""
    vocab = item_vocab.sort_values("item").reset_index(drop=True)
    vocab = vocab.assign(item=vocab["item"].astype(np.int64))
    columns = ["item", "item_id", *(c for c in vocab.columns if c not in ("item", "item_id"))]
    return pa.Table.from_pandas(vocab[columns], preserve_index=False)


def export_bundle(
    model: SequenceRecommender,
    item_vocab: pd.DataFrame,
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    metrics: dict[str, float] | None = None,
    config: dict[str, Any] | None = None,
    event_vocab: Sequence[str] = (),
    histories: dict[str, np.ndarray] | None = None,
    index_factory: str = "Flat",
    index_params: dict[str, Any] | None = None,
    recall_k: int = 100,
    opset: int | None = None,
    max_len: int | None = None,
    commit: str | None = None,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
    extra_exports: Sequence[Callable[[Path], dict[str, Any]]] = (),
) -> Path:
    """Write the bundle of ``model`` to ``out_dir``; returns its path.

    ``item_vocab``: the processed dataset's item table (``item``, ``item_id``, attributes).
    ``histories``: real evaluation histories (by input name, int arrays [N, L]) whose queries
    measure the index recall and the ONNX / torch parity; without them, item vectors are the queries.
    ``config``: the training config (its ``model`` node is the manifest's model config).
    The model is switched to eval mode; baselines need ``max_len``.
    ``extra_exports``: called with the bundle directory being written, each writes optional files
    (e.g. ``journey.onnx``) and returns the manifest entries that describe them.
    """
    out = Path(out_dir)
    check_target(out, overwrite)  # before the slow work
    model = model.eval()
    max_len = int(max_len or getattr(model, "max_len", 0) or 0)
    if max_len < 1:
        raise ExportError(f"{type(model).__name__} has no max_len: pass the history length it serves")
    if "event_types" in encoder_inputs(model) and len(event_vocab) < 2:
        raise ExportError(f"{type(model).__name__} uses event types: pass the dataset's event_vocab")
    params = {k: v for k, v in (index_params or {}).items() if v is not None}
    with torch.no_grad():
        items = np.ascontiguousarray(model.item_vectors().detach().float().cpu().numpy(), dtype=np.float32)
    _check_items(model, items, item_vocab)
    index = build_index(items, index_factory, params)  # before the slow ONNX export: bad specs fail fast
    with staged_bundle(out, overwrite) as tmp:
        encoder = export_encoder(model, tmp / ENCODER, max_len, opset)
        np.save(tmp / ITEMS, items, allow_pickle=False)
        write_index(index, tmp / INDEX)
        pq.write_table(vocab_table(item_vocab), tmp / VOCAB)
        queries, checks = _query_vectors(model, tmp / ENCODER, encoder, histories, items)
        entries = {key: value for write in extra_exports for key, value in write(tmp).items()}
        recall = {**measure_recall(index, items, queries, recall_k), "queries": checks.pop("queries")}
        manifest = {
            "name": name,
            "version": str(version),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git_commit": commit or git_commit(),
            "model": {"class": type(model).__name__, "config": _model_config(model, config, max_len)},
            "metrics": {key: round(float(value), 6) for key, value in (metrics or {}).items()},
            **_shapes(items, encoder, event_vocab),
            "index": {
                "factory": index_factory,
                "metric": "inner_product",
                "params": params,
                "recall": recall,
            },
            "export": {"encoder_seconds": round(encoder.seconds, 3), **checks},
            **({"train_config": config} if config else {}),
            **entries,
            **(extra or {}),
        }
        write_manifest(tmp, manifest)
    return out


def _shapes(items: np.ndarray, encoder: EncoderExport, event_vocab: Sequence[str]) -> dict[str, Any]:
    """The manifest keys serving needs to feed the encoder and read the item table."""
    return {
        "n_items": int(items.shape[0]),
        "dim": int(items.shape[1]),
        "max_len": encoder.max_len,
        "min_len": encoder.min_len,  # shorter histories are left-padded to it
        "opset": encoder.opset,
        "inputs": encoder.inputs,
        "event_vocab": list(event_vocab) if "event_types" in encoder.inputs else [],
    }


def _check_items(model: SequenceRecommender, items: np.ndarray, item_vocab: pd.DataFrame) -> None:
    if items.nbytes > MAX_ITEM_TABLE_BYTES:
        raise ExportError(
            f"{type(model).__name__}: its item table is {items.nbytes / 2**30:.1f} GiB "
            f"({items.shape[0]:,} x {items.shape[1]:,}); limit {MAX_ITEM_TABLE_BYTES >> 30} GiB"
        )
    if len(item_vocab) != items.shape[0] - 1:
        raise ExportError(
            f"the item vocabulary has {len(item_vocab):,} items, the model {items.shape[0] - 1:,} "
            "(plus padding): the checkpoint was trained on another dataset"
        )


def _query_vectors(
    model: SequenceRecommender,
    encoder_path: Path,
    encoder: EncoderExport,
    histories: dict[str, np.ndarray] | None,
    items: np.ndarray,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Queries to measure recall on, and the ONNX / torch parity check.

    With ``histories``: the ONNX encoder's queries for them. Without: a sample of item vectors
    (item-to-item queries), and parity is checked on random padded histories instead.
    """
    real = bool(histories) and len(histories.get(ITEM_IDS, ())) > 0
    if real:
        histories = {name: values[:, -encoder.max_len :] for name, values in histories.items()}
        missing = [name for name in encoder.inputs if name not in histories]
        if missing:
            raise ExportError(f"the evaluation histories lack the encoder input(s) {missing}")
    else:
        histories = random_histories(model, 64, encoder.max_len, pad=True)
    onnx_queries = encode_onnx(onnx_session(encoder_path), histories, encoder.min_len)
    torch_queries = encode_torch(model, histories)
    diff = parity([onnx_queries], [torch_queries], f"{type(model).__name__}: the ONNX encoder")
    checks = {"parity_max_abs_diff": diff, "parity_n": len(onnx_queries)}
    if real:
        return onnx_queries, {"queries": "histories", **checks}
    sample = np.unique(np.linspace(1, items.shape[0] - 1, min(1000, items.shape[0] - 1)).astype(np.int64))
    return items[sample], {"queries": "item_vectors", **checks}


def _model_config(model: SequenceRecommender, config: dict[str, Any] | None, max_len: int) -> dict[str, Any]:
    node = dict((config or {}).get("model") or {})
    return {**node, "n_items": int(model.n_items), "dim": int(model.dim), "max_len": max_len}
