"""``shopformer-export``: a trained model as a serving bundle (the format of :mod:`shopformer.serve.bundle`).

The bundle holds the encoder as ONNX (batch and sequence length dynamic), the item vector table,
a FAISS index over it with its measured recall, the item vocabulary with attributes, and a manifest
with the sha256 of every file. It is written to a temporary sibling directory and renamed into
place at the end, so a half-written bundle never looks complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import hydra
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from shopformer.data.schema import DataError
from shopformer.models.base import SequenceRecommender
from shopformer.serve.bundle import ENCODER, INDEX, ITEMS, VOCAB, write_manifest
from shopformer.serve.index import (
    IndexConfigError,
    build_index,
    measure_recall,
    set_build_params,
    set_search_params,
    write_index,
)
from shopformer.train.checkpoint import best_score, checkpoint_config, load_checkpoint, restore_model
from shopformer.train.config import CONF_DIR, build_datamodule
from shopformer.train.tracking import git_commit, publish_bundle

ITEM_IDS = "item_ids"
CHANNELS = ("event_types", "gap_buckets")  # optional encoder inputs, in this order
OUTPUT = "query"
PARITY_TOLERANCE = 1e-3  # ONNX vs torch queries on the recall histories; beyond it the export fails
MAX_ITEM_TABLE_BYTES = 4 << 30
EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")


class ExportError(ValueError):
    """A model or an option that cannot be exported; the message says why."""


@dataclass(frozen=True)
class EncoderExport:
    """What :func:`export_encoder` produced."""

    inputs: list[str]
    opset: int
    min_len: int
    max_len: int
    seconds: float


class EncoderGraph(nn.Module):
    """``forward(...) = model.encode(...)``: the function the ONNX graph computes."""

    def __init__(self, model: SequenceRecommender) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, item_ids: Tensor, event_types: Tensor | None = None, gap_buckets: Tensor | None = None
    ) -> Tensor:
        return self.model.encode(item_ids, event_types, gap_buckets)


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
    graph = (graph or EncoderGraph(model.eval())).eval()
    started = time.perf_counter()
    errors = []
    for min_len in (1, 2):
        if max_len < min_len:
            break
        try:
            _torch_export(graph, model, path, inputs, min_len, max_len, opset, outputs)
        except Exception as exc:  # the exporter raises many types; the message is what matters
            errors.append(_first_line(exc.__cause__ or exc))
            continue
        used = {op.domain: op.version for op in onnx.load(str(path), load_external_data=False).opset_import}
        return EncoderExport(
            inputs, int(used.get("", opset or 0)), min_len, max_len, time.perf_counter() - started
        )
    raise ExportError(
        f"{type(model).__name__}: torch.onnx.export failed: {errors[-1] if errors else 'max_len < 1'}"
    )


def _torch_export(
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
    with _quiet_exporter():
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
def _quiet_exporter() -> Iterator[None]:
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


def onnx_session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def encode_onnx(
    session: ort.InferenceSession, histories: dict[str, np.ndarray], min_len: int = 1, batch: int = 256
) -> np.ndarray:
    """Queries of the ONNX encoder for ``histories`` (left-padded to ``min_len`` when shorter)."""
    names = [i.name for i in session.get_inputs()]
    feeds = {name: _left_pad(np.asarray(histories[name], dtype=np.int64), min_len) for name in names}
    n = len(feeds[names[0]])
    parts = [
        session.run([OUTPUT], {k: v[i : i + batch] for k, v in feeds.items()})[0] for i in range(0, n, batch)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, session.get_outputs()[0].shape[1]), np.float32)


@torch.no_grad()
def encode_torch(
    model: SequenceRecommender, histories: dict[str, np.ndarray], batch: int = 256
) -> np.ndarray:
    """Queries of ``model.encode`` for ``histories`` (numpy int arrays by input name)."""
    inputs = encoder_inputs(model)
    n = len(histories[ITEM_IDS])
    parts = []
    for i in range(0, n, batch):
        tensors = {
            name: torch.as_tensor(np.asarray(histories[name][i : i + batch], dtype=np.int64))
            for name in inputs
        }
        parts.append(model.encode(tensors.pop(ITEM_IDS), **tensors).float().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, model.dim), np.float32)


def _left_pad(values: np.ndarray, length: int) -> np.ndarray:
    short = length - values.shape[1]
    return np.pad(values, ((0, 0), (short, 0))) if short > 0 else values


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
    _check_target(out, overwrite)
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the bundle is for readers
    try:
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
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
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


def check_index_spec(factory: str, params: dict[str, Any] | None, dim: int, n_items: int) -> None:
    """Refuse an index spec FAISS cannot build for ``n_items`` (padding included) vectors of ``dim``."""
    try:
        index = faiss.index_factory(int(dim), str(factory), faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise IndexConfigError(
            f"FAISS index factory string {factory!r} is not valid: {lines[-1] if lines else 'unknown'}"
        ) from None
    nlist = getattr(faiss.extract_index_ivf(index), "nlist", 0) if "IVF" in str(factory) else 0
    if nlist > n_items - 1:
        raise IndexConfigError(
            f"index {factory!r} needs at least {nlist} items to train its {nlist} lists; "
            f"the catalogue has {n_items - 1}"
        )
    given = {k: v for k, v in (params or {}).items() if v is not None}
    set_build_params(index, given)
    set_search_params(index, given)


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists; choose another directory or pass overwrite=true")


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
    diff = float(np.abs(onnx_queries - encode_torch(model, histories)).max())
    if not diff <= PARITY_TOLERANCE:
        raise ExportError(
            f"{type(model).__name__}: the ONNX encoder differs from torch by {diff:.2e} "
            f"(> {PARITY_TOLERANCE:g}) on {len(onnx_queries)} histories; not writing a wrong bundle"
        )
    checks = {"parity_max_abs_diff": diff, "parity_n": len(onnx_queries)}
    if real:
        return onnx_queries, {"queries": "histories", **checks}
    sample = np.unique(np.linspace(1, items.shape[0] - 1, min(1000, items.shape[0] - 1)).astype(np.int64))
    return items[sample], {"queries": "item_vectors", **checks}


def _model_config(model: SequenceRecommender, config: dict[str, Any] | None, max_len: int) -> dict[str, Any]:
    node = dict((config or {}).get("model") or {})
    return {**node, "n_items": int(model.n_items), "dim": int(model.dim), "max_len": max_len}


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished bundle to ``out``; an existing one (``overwrite``) is moved aside first."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}-old-{time.time_ns()}")
    out.rename(old)
    tmp.rename(out)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


# -- from a checkpoint ---------------------------------------------------------------------------


def default_name(cfg: DictConfig) -> str:
    """The bundle / registered model name of a run: ``registry.name``, else ``shopformer-<task_name>``."""
    registry = cfg.get("registry") or {}
    return str(registry.get("name") or f"shopformer-{cfg.get('task_name') or 'model'}")


def export_and_publish(
    cfg: DictConfig, dm, ckpt: str, run_dir: Path, logger, commit: str, metrics: dict[str, float]
) -> dict[str, Any]:
    """The bundle of ``ckpt``'s weights in ``<run_dir>/bundle``; logged and registered in MLflow.

    Shared by every training path (recommenders and journey models).
    """
    run_id = getattr(logger, "run_id", None) if logger else None
    model = restore_model(load_checkpoint(ckpt), cfg, dm)
    bundle = export_run(
        model,
        cfg,
        dm,
        run_dir / "bundle",
        version=run_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        metrics=metrics,
        commit=commit,
        overwrite=True,  # a rerun in the same directory
        extra={"run_id": run_id} if run_id else None,
    )
    out: dict[str, Any] = {"bundle": str(bundle)}
    if logger:
        registry = cfg.get("registry") or {}
        out["registered_model"] = publish_bundle(
            logger.experiment,
            run_id,
            bundle,
            register=bool(registry.get("register", True)),
            name=default_name(cfg),
            alias=registry.get("alias"),
        )
    return out


def export_run(
    model: SequenceRecommender,
    cfg: DictConfig,
    dm,
    out: str | Path,
    *,
    version: str,
    metrics: dict[str, float] | None = None,
    index: DictConfig | dict | None = None,
    name: str | None = None,
    commit: str | None = None,
    recall_queries: int = 1000,
    opset: int | None = None,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """The bundle of a model trained with ``cfg`` on the set-up datamodule ``dm``."""
    index = OmegaConf.to_container(OmegaConf.create(index or cfg.get("index") or {}), resolve=True)
    data = dm.data
    histories = eval_histories(dm, "test", recall_queries)
    extra_exports = []
    if hasattr(model, "journey"):  # journey models also write journey.onnx (needs this module: imported here)
        from shopformer.train.journey_export import journey_exporter

        extra_exports.append(
            journey_exporter(model, histories, data.event_vocab, int(cfg.datamodule.max_len), opset, dm)
        )
    return export_bundle(
        model,
        data.item_vocab,
        out,
        name=name or default_name(cfg),
        version=version,
        metrics=metrics,
        config=OmegaConf.to_container(cfg, resolve=True),
        event_vocab=data.event_vocab,
        histories=histories,
        index_factory=str(index.get("factory") or "Flat"),
        index_params=index.get("params") or {},
        recall_k=int(index.get("recall_k") or 100),
        opset=opset,
        max_len=int(cfg.datamodule.max_len),
        commit=commit,
        overwrite=overwrite,
        extra={"dataset": {"name": data.meta["name"], "hash": data.meta["config_hash"]}, **(extra or {})},
        extra_exports=extra_exports,
    )


def export_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """``shopformer-export``: the bundle of ``cfg.ckpt`` at ``cfg.out``; returns the summary line."""
    out = Path(cfg.out)
    _check_target(out, bool(cfg.overwrite))  # before loading data and model
    checkpoint = load_checkpoint(cfg.ckpt)
    run_cfg = checkpoint_config(checkpoint)
    run_cfg.paths.cache_dir = cfg.paths.cache_dir
    dm = build_datamodule(run_cfg)
    dm.setup()
    model = restore_model(checkpoint, run_cfg, dm)
    started = time.perf_counter()
    path = export_run(
        model,
        run_cfg,
        dm,
        out,
        version=str(cfg.version or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())),
        metrics=best_score(checkpoint),
        index=cfg.index,
        name=cfg.name,
        commit=checkpoint.get("shopformer_git_commit"),
        recall_queries=int(cfg.recall_queries),
        opset=cfg.opset,
        overwrite=bool(cfg.overwrite),
    )
    manifest = json.loads((path / "manifest.json").read_text())
    return {
        "bundle": str(path),
        "name": manifest["name"],
        "version": manifest["version"],
        "index": {"factory": manifest["index"]["factory"], "recall": manifest["index"]["recall"]["value"]},
        "seconds": round(time.perf_counter() - started, 3),
    }


@hydra.main(config_path=str(CONF_DIR), config_name="export", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    try:
        summary = export_checkpoint(cfg)
    except (DataError, ExportError, IndexConfigError, InstantiationException) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary), flush=True)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
