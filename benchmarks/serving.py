"""Serving performance side by side: encoder latency, FAISS on a 1M-item catalogue, HTTP under load.

    SHOPFORMER_DATA=../shared/data .venv/bin/python benchmarks/serving.py [--ckpt F | --bundle D] [--quick]

1. Encoder latency on an ML-1M bundle (SASRec, D=64, max_len 200): the ONNX encoder through
   onnxruntime vs the same model in torch eager, batch 1 and 256 of real ML-1M histories cut /
   left-padded to 200 items, and the whole ``Recommender.recommend`` call (encode + FAISS + rules).
   ``--ckpt``: a trained checkpoint, exported to a temporary bundle (Flat index).
   ``--bundle``: an existing bundle (the torch rows need ``--ckpt`` as well).
   Neither: an untrained SASRec on ML-1M (latency does not depend on the weights).
2. FAISS: Flat, IVF and HNSW32 on a synthetic catalogue (``--catalog`` rows: a Gaussian kernel
   density estimate of the bundle's item vectors) and on the ML-1M items themselves; the queries are real
   ML-1M query vectors (encoded test histories). Builds use 2 FAISS threads, batch-1 latency 1.
3. HTTP on loopback: ``shopformer-serve`` as a subprocess, with and without its dynamic batching,
   and the same app under ``uvicorn --workers 2`` (``--servers``), ``POST /recommend`` with real
   ML-1M histories (raw ids, 50-200 items, k=10, exclude_seen) from keep-alive connections on one
   asyncio loop (``--client threads``: an http.client thread each), closed loop (each client sends
   its next request when the last one is answered) and open loop (requests at a fixed rate, latency
   counted from the scheduled send time). The load generator asks for a short EEVDF time slice
   (``--client-slice-ms``, 0.1 ms) so that, with both cores busy, its sends wake up on time as a
   client on its own machine would: with the kernel's slice it sent 4.5 ms late at p99 with two
   workers, lateness that counts as server latency. CPU ms / request: the server's process group and
   this (client) process, from /proc. The table says whether uvicorn found httptools / uvloop.

Prints a header line and one Markdown table per section on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.client
import json
import os
import platform
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shopformer.provenance import processor

MAX_LEN = 200
K_RECALL = 100
STARTUP_SECONDS = 180.0  # the box may be busy: loading imports + bundle can take a while
HEADERS = {"Content-Type": "application/json"}


# -- small helpers ---------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(values_ms: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(p50, p99) of latencies in ms."""
    p50, p99 = np.percentile(np.asarray(values_ms, dtype=np.float64), [50, 99])
    return float(p50), float(p99)


def time_calls(fn: Callable[[Any], Any], inputs: Sequence[Any], warmup: int = 5) -> np.ndarray:
    """Milliseconds of ``fn(x)`` for each ``x`` in ``inputs`` (after ``warmup`` untimed calls)."""
    for x in inputs[:warmup]:
        fn(x)
    out = np.empty(len(inputs))
    for i, x in enumerate(inputs):
        started = time.perf_counter()
        fn(x)
        out[i] = (time.perf_counter() - started) * 1e3
    return out


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def header(argv: Sequence[str]) -> str:
    """Date, machine, load, library versions and the exact command."""
    import faiss
    import onnxruntime
    import torch

    env = f"SHOPFORMER_DATA={os.environ['SHOPFORMER_DATA']} " if "SHOPFORMER_DATA" in os.environ else ""
    command = env + " ".join(shlex.quote(a) for a in [".venv/bin/python", *argv])
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}; nproc {os.cpu_count()}, {processor()}, load average {load} "
        f"at start; onnxruntime {onnxruntime.__version__}, faiss {faiss.__version__}, torch "
        f"{torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}\n\n"
        f"command: `{command}`"
    )


# -- the ML-1M bundle, model and histories ----------------------------------------------------------


@dataclass
class Setup:
    """The bundle under test, the torch model behind it (if any), and ML-1M histories."""

    bundle: Path
    model: Any | None  # a SequenceRecommender, or None (no torch rows)
    how: str
    histories: np.ndarray  # internal ids [n_users, MAX_LEN], left-padded, test histories
    raw_ids: np.ndarray  # raw id of each internal id (row 0: padding)


def cache_dir() -> str:
    return os.environ.get("SHOPFORMER_CACHE", ".cache/shopformer")


def default_datamodule():
    """ML-1M (the SASRec file), max_len 200: the dataset of the ``sasrec_ml1m`` experiment."""
    from shopformer.data.datamodule import SequenceDataModule
    from shopformer.data.sources import SasrecTxtSource
    from shopformer.data.store import DatasetSpec

    dm = SequenceDataModule(DatasetSpec("ml1m", SasrecTxtSource()), cache_dir=cache_dir(), max_len=MAX_LEN)
    dm.setup()
    return dm


def from_checkpoint(ckpt: str):
    """(model, datamodule) of a training checkpoint."""
    from shopformer.train.checkpoint import checkpoint_config, load_checkpoint, restore_model
    from shopformer.train.config import build_datamodule

    checkpoint = load_checkpoint(ckpt)
    cfg = checkpoint_config(checkpoint)
    cfg.paths.cache_dir = cache_dir()
    dm = build_datamodule(cfg)
    dm.setup()
    return restore_model(checkpoint, cfg, dm), dm, cfg, checkpoint


def untrained_sasrec(dm):
    import torch

    from shopformer.models.sasrec import SASRec

    torch.manual_seed(0)
    return SASRec(dm.n_items, dim=64, max_len=MAX_LEN, n_blocks=2, heads=1, dropout=0.2).eval()


def export_to(model, dm, out: Path, cfg=None, checkpoint=None) -> Path:
    """The bundle of ``model`` (Flat index) at ``out``, via the export module."""
    from shopformer.train.bundle_export import eval_histories, export_bundle
    from shopformer.train.export import export_run

    if cfg is not None:
        return export_run(
            model,
            cfg,
            dm,
            out,
            version="bench",
            index={"factory": "Flat"},
            commit=(checkpoint or {}).get("shopformer_git_commit"),
        )
    return export_bundle(
        model,
        dm.data.item_vocab,
        out,
        name="shopformer-bench-untrained",
        version="bench",
        histories=eval_histories(dm, "test", 1000),
        max_len=MAX_LEN,
    )


def test_histories(dm) -> np.ndarray:
    """Every test history (the events before each user's test target), last MAX_LEN, left-padded."""
    from shopformer.data.batches import gather_windows

    test = dm.test_set
    return gather_windows(dm.tokens.item, test.starts, test.ends, MAX_LEN).astype(np.int64)


def raw_id_table(dm) -> np.ndarray:
    vocab = dm.data.item_vocab.sort_values("item")
    raw = np.empty(dm.n_items, dtype=object)
    raw[vocab["item"].to_numpy()] = [v.item() if isinstance(v, np.generic) else v for v in vocab["item_id"]]
    return raw


def prepare(args: argparse.Namespace, workdir: Path) -> Setup:
    """Export (or open) the bundle and load the torch model and the ML-1M test histories."""
    model = cfg = checkpoint = None
    if args.ckpt:
        log(f"loading checkpoint {args.ckpt}")
        model, dm, cfg, checkpoint = from_checkpoint(args.ckpt)
    else:
        dm = default_datamodule()
    if args.bundle:
        bundle, how = Path(args.bundle), f"bundle {args.bundle}"
        check_bundle_matches(bundle, dm)
    else:
        if model is None:
            model, how = untrained_sasrec(dm), "untrained SASRec (2 blocks, d=64, max_len 200), exported"
        else:
            how = f"checkpoint {args.ckpt}, exported"
        log("exporting the bundle (ONNX export + parity check)")
        bundle = export_to(model, dm, workdir / "bundle", cfg, checkpoint)
    return Setup(bundle, model, how, test_histories(dm), raw_id_table(dm))


def check_bundle_matches(bundle: Path, dm) -> None:
    """Refuse a bundle whose vocabulary is not the ML-1M dataset's (histories would be wrong)."""
    import pyarrow.parquet as pq

    vocab = pq.read_table(bundle / "vocab.parquet").to_pandas()
    ours = dm.data.item_vocab.sort_values("item")["item_id"].to_numpy()
    if len(vocab) != len(ours) or not np.array_equal(vocab["item_id"].to_numpy(), ours):
        sys.exit(f"error: {bundle} was not exported from the ML-1M dataset this benchmark reads")


def longest(histories: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` histories with the most real items (ties: dataset order)."""
    lengths = (histories > 0).sum(axis=1)
    return histories[np.argsort(-lengths, kind="stable")[:n]]


def spread(histories: np.ndarray, n: int) -> np.ndarray:
    """``n`` histories evenly spread over the dataset (as the export's recall queries)."""
    picks = np.unique(np.linspace(0, len(histories) - 1, min(n, len(histories))).astype(np.int64))
    return histories[picks]


# -- 1. encoder latency -----------------------------------------------------------------------------


def encoder_rows(setup: Setup, args: argparse.Namespace) -> list[list[Any]]:
    """p50 / p99 of onnxruntime and torch eager at batch 1 and 256 (1 and 2 threads at 256)."""
    import torch

    from shopformer.serve.onnx_session import onnx_session  # configured as serving configures it

    full = longest(setup.histories, max(args.batch1_calls, 256))
    singles = [full[i % len(full)][None] for i in range(args.batch1_calls)]
    batch = full[:256]
    batches = [np.roll(batch, i, axis=0) for i in range(args.batch256_calls)]
    real = int((batch > 0).sum(axis=1).min())
    rows = []
    for inputs, threads, note in (
        (singles, 1, f"1 x {MAX_LEN}"),
        (batches, 1, f"256 x {MAX_LEN}"),
        (batches, 2, f"256 x {MAX_LEN}"),
    ):
        session = onnx_session(setup.bundle / "encoder.onnx", threads)
        name = session.get_inputs()[0].name
        log(f"encoder: onnxruntime {note}, {threads} thread(s), {len(inputs)} calls")
        ort_ms = time_calls(lambda x, s=session, n=name: s.run(None, {n: x}), inputs)
        torch_ms = None
        if setup.model is not None:
            log(f"encoder: torch eager {note}, {threads} thread(s)")
            torch.set_num_threads(threads)
            with torch.no_grad():
                torch_ms = time_calls(lambda x: setup.model.encode(torch.from_numpy(x)), inputs)
        rows.append(encoder_row(note, threads, len(inputs), ort_ms, torch_ms))
    torch.set_num_threads(1)
    log(f"encoder inputs: the {len(full)} longest test histories; the shortest of the 256 has {real} items")
    return rows


def encoder_row(note: str, threads: int, calls: int, ort_ms, torch_ms) -> list[Any]:
    o50, o99 = pct(ort_ms)
    row = [note, threads, calls, f"{o50:.2f}", f"{o99:.2f}"]
    if torch_ms is None:
        return [*row, "-", "-", "-"]
    t50, t99 = pct(torch_ms)
    return [*row, f"{t50:.2f}", f"{t99:.2f}", f"{t50 / o50:.2f}x"]


def recommend_rows(setup: Setup, rec, args: argparse.Namespace) -> list[list[Any]]:
    """``Recommender.recommend`` (raw ids in, raw ids out) at batch 1: p50 / p99."""
    full = longest(setup.histories, args.batch1_calls)
    sessions = [setup.raw_ids[row[row > 0]].tolist() for row in full]
    index = rec.manifest["index"]["factory"]
    log(f"Recommender.recommend: {len(sessions)} calls")
    ms = time_calls(lambda items: rec.recommend(items, k=10, exclude_seen=True), sessions)
    p50, p99 = pct(ms)
    name = f"Recommender.recommend, 1 x {MAX_LEN} raw ids, k=10, exclude_seen, FAISS {index}"
    target = f"target p99 <= 3 ms: {'met' if p99 <= 3.0 else 'missed'}"
    return [[name, 1, len(ms), f"{p50:.2f}", f"{p99:.2f}", "-", "-", target]]


# -- 2. FAISS ---------------------------------------------------------------------------------------


@dataclass
class IndexSpec:
    """One index to build and the search settings to measure it at."""

    name: str
    factory: str
    param: str | None = None  # nprobe / efSearch
    values: Sequence[int] = ()
    train_points: int | None = None  # IVF: train on this many (random) vectors instead of all
    build_params: dict = field(default_factory=dict)  # e.g. HNSW efConstruction


def synthetic_catalogue(items: np.ndarray, n: int, noise: float, seed: int = 0) -> np.ndarray:
    """``n`` item vectors (plus padding row 0) that look like ``items``: random real items + noise.

    A Gaussian kernel density estimate of the real items: each new vector is a random real item
    plus N(0, noise^2 * C), C the real items' covariance, so the noise has the data's principal
    axes (not 64 equal, independent directions, which would make neighbourhoods look random).
    """
    real = items[1:].astype(np.float64)
    rng = np.random.default_rng(seed)
    shape = noise * np.linalg.cholesky(np.cov(real.T) + 1e-9 * np.eye(real.shape[1]))
    out = np.zeros((n + 1, real.shape[1]), dtype=np.float32)
    for lo in range(1, n + 1, 200_000):
        hi = min(n + 1, lo + 200_000)
        base = real[rng.integers(0, len(real), hi - lo)]
        out[lo:hi] = base + rng.standard_normal(base.shape) @ shape.T
    return out


def build(items: np.ndarray, spec: IndexSpec):
    """(index, seconds): ``build_index`` for Flat / HNSW; IVF trained on a sample, then all added."""
    import faiss

    from shopformer.serve.index import build_index

    started = time.perf_counter()
    if spec.train_points is None or spec.train_points >= len(items) - 1:
        index = build_index(items, spec.factory, spec.build_params)
    else:
        vectors = np.ascontiguousarray(items[1:])
        index = faiss.index_factory(vectors.shape[1], spec.factory, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(1).choice(len(vectors), spec.train_points, replace=False)
        index.train(vectors[np.sort(sample)])
        index.add(vectors)
    return index, time.perf_counter() - started


def recall(truth: np.ndarray, found: np.ndarray) -> float:
    """Recall@k of ``found`` against ``truth`` (both [n, k] ids), as ``measure_recall`` computes it."""
    hits = sum(len(np.intersect1d(t, f)) for t, f in zip(truth, found, strict=True))
    return hits / truth.size


def search_latency(index, queries: np.ndarray, k: int) -> np.ndarray:
    """Per-query ms at batch 1 with one FAISS thread (as serving searches)."""
    import faiss

    from shopformer.serve.index import search

    faiss.omp_set_num_threads(1)
    try:
        return time_calls(lambda q: search(index, q, k), [q[None] for q in queries])
    finally:
        faiss.omp_set_num_threads(2)


def faiss_rows(
    label: str, items: np.ndarray, queries: np.ndarray, specs: Sequence[IndexSpec], flat_queries: int
) -> list[list[Any]]:
    """Build time, batch-1 latency, recall@100 vs Flat and speed-up vs Flat for every spec / setting."""
    import faiss

    from shopformer.serve.index import search, set_search_params

    faiss.omp_set_num_threads(2)
    k = min(K_RECALL, len(items) - 1)
    rows, flat_p50, truth = [], None, None
    for spec in specs:
        log(f"FAISS {label}: building {spec.factory}")
        index, seconds = build(items, spec)
        for value in spec.values or [None]:
            if value is not None:
                set_search_params(index, {spec.param: value})
            _, found = search(index, queries, k)  # batch search (2 threads): recall only
            truth = found if truth is None else truth
            n = flat_queries if spec.factory == "Flat" else len(queries)
            log(f"FAISS {label}: {spec.factory} {spec.param or ''}={value or ''}: latency on {n} queries")
            p50, p99 = pct(search_latency(index, queries[:n], k))
            flat_p50 = p50 if flat_p50 is None else flat_p50
            setting = f"{spec.param}={value}" if value is not None else "exact"
            rows.append(
                [
                    label,
                    spec.name,
                    setting,
                    f"{seconds:.1f}",
                    f"{p50:.3f}",
                    f"{p99:.3f}",
                    f"{recall(truth, found):.4f}",
                    f"{flat_p50 / p50:.1f}x",
                ]
            )
        del index
    return rows


def catalogue_specs(
    n: int, nlist: int, quick: bool, hnsw_builds: Sequence[tuple[int, int]], ef_search: Sequence[int]
) -> list[IndexSpec]:
    ivf = IndexSpec(
        f"IVF{nlist},Flat (trained on {min(n, 40 * nlist):,} random items)",
        f"IVF{nlist},Flat",
        "nprobe",
        (16, 32, 64) if quick else (16, 32, 64, 128),
        train_points=min(n, 40 * nlist),
    )
    hnsw = [
        IndexSpec(
            f"HNSW{m} (efConstruction {ef})", f"HNSW{m}", "efSearch", ef_search, None, {"efConstruction": ef}
        )
        for m, ef in hnsw_builds
    ]
    return [IndexSpec("Flat", "Flat"), ivf, *hnsw]


def small_specs(n_items: int) -> list[IndexSpec]:
    nlist = max(1, int(round(np.sqrt(n_items) / 8)) * 8)  # IVF4096 cannot train on 3,415 items
    return [
        IndexSpec("Flat", "Flat"),
        IndexSpec(f"IVF{nlist},Flat", f"IVF{nlist},Flat", "nprobe", (4, 8, 16)),
        IndexSpec("HNSW32 (efConstruction 40)", "HNSW32", "efSearch", (64, 128, 256)),
    ]


def query_vectors(rec, histories: np.ndarray, n: int) -> np.ndarray:
    """Real ML-1M query vectors: the bundle's encoder on ``n`` test histories spread over users."""
    picks = spread(histories, n)
    return np.concatenate(
        [rec.query_vectors({"item_ids": picks[i : i + 256]}) for i in range(0, len(picks), 256)]
    )


def noise_note(items: np.ndarray, noise: float) -> str:
    """How big the synthetic noise is next to the real items' nearest-neighbour distances."""
    real = items[1:].astype(np.float64)
    sq = (real**2).sum(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2 * real @ real.T
    np.fill_diagonal(d2, np.inf)
    nearest = float(np.median(np.sqrt(np.maximum(d2.min(axis=1), 0))))
    norm = noise * float(np.sqrt(np.trace(np.cov(real.T))))
    return (
        f"synthetic = random ML-1M item vector + N(0, {noise:g}^2 x covariance of the real items): noise "
        f"norm ~{norm:.2f} vs median nearest-neighbour distance {nearest:.2f} between real items"
    )


def faiss_section(setup: Setup, rec, args: argparse.Namespace) -> tuple[list[list[Any]], str]:
    """Rows for the ML-1M items and the synthetic catalogue, and a note on how it was drawn."""
    log(f"encoding {args.queries} query histories")
    queries = query_vectors(rec, setup.histories, args.queries)
    items = rec.items
    rows = faiss_rows(f"ML-1M items ({len(items) - 1:,})", items, queries, small_specs(len(items) - 1), 1000)
    log(f"synthetic catalogue: {args.catalog:,} items (noise {args.noise})")
    catalogue = synthetic_catalogue(items, args.catalog, args.noise)
    specs = catalogue_specs(args.catalog, args.ivf_nlist, args.quick, args.hnsw, args.ef_search)
    label = f"synthetic {args.catalog:,}"
    rows += faiss_rows(label, catalogue, queries, specs, args.flat_latency_queries)
    return rows, noise_note(items, args.noise)


# -- 3. HTTP ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """One way of running the HTTP service."""

    name: str
    workers: int = 1
    batching: str = "loop"  # shopformer-serve's dynamic batching of /recommend: loop | thread | off
    options: tuple[str, ...] = ()  # further shopformer-serve key=value options
    logs: bool = False  # log impressions (log_dir=a temporary directory), then count the rows


SERVERS = {
    "cli": ServerSpec("shopformer-serve (1 worker, batching on the event loop)"),
    "thread": ServerSpec(
        "shopformer-serve batching=thread (1 worker, batches on a thread)", batching="thread"
    ),
    "unbatched": ServerSpec("shopformer-serve batching=off (`def` endpoint, thread pool)", batching="off"),
    "workers2": ServerSpec("shopformer-serve workers=2 (batching on each event loop)", workers=2),
    "nowait": ServerSpec(
        "shopformer-serve max_wait_ms=0 (1 worker, batching on the event loop, never waits)",
        options=("max_wait_ms=0",),
    ),
    "nowait2": ServerSpec(
        "shopformer-serve workers=2 max_wait_ms=0 (never waits)", workers=2, options=("max_wait_ms=0",)
    ),
    "thread2": ServerSpec("shopformer-serve workers=2 batching=thread", workers=2, batching="thread"),
    "greedy_logged": ServerSpec("shopformer-serve policy=greedy, impressions logged", logs=True),
    "greedy_logged_thread": ServerSpec(
        "shopformer-serve policy=greedy, impressions logged by a thread (log_writer=thread)",
        options=("log_writer=thread",),
        logs=True,
    ),
    "epsilon_logged": ServerSpec(
        "shopformer-serve policy=epsilon_greedy top_n=20, impressions logged",
        options=("policy=epsilon_greedy", "top_n=20"),
        logs=True,
    ),
    "softmax_logged": ServerSpec(
        "shopformer-serve policy=softmax top_n=20, impressions logged",
        options=("policy=softmax", "top_n=20"),
        logs=True,
    ),
    "thompson_logged": ServerSpec(
        "shopformer-serve policy=thompson top_n=20, impressions logged",
        options=("policy=thompson", "top_n=20"),
        logs=True,
    ),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(
    spec: ServerSpec, bundle: Path, port: int, threads: int, log_dir: Path | None = None
) -> list[str]:
    serve = Path(sys.executable).with_name("shopformer-serve")
    command = [str(serve)] if serve.exists() else [sys.executable, "-m", "shopformer.serve.cli"]
    options = [f"bundle={bundle}", f"port={port}", f"threads={threads}", "log_level=warning"]
    options += [f"log_dir={log_dir}"] if log_dir is not None else []
    return [*command, *options, f"workers={spec.workers}", f"batching={spec.batching}", *spec.options]


def start_server(
    spec: ServerSpec, bundle: Path, threads: int, log_dir: Path | None = None
) -> tuple[subprocess.Popen, int]:
    """The server in its own process group, once it answers /health; (process, port)."""
    port = free_port()
    command = server_command(spec, bundle, port, threads, log_dir)
    env = dict(os.environ)
    server = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}: {shlex.join(command)}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return server, port
        except OSError:
            time.sleep(0.3)
    stop_server(server)
    raise RuntimeError(f"the server did not answer /health within {STARTUP_SECONDS:.0f} s")


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (uvicorn workers included), SIGKILL after 15 s."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes of process group ``pgid`` (from /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields: state, ppid, pgrp, ..., utime (11), stime (12)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def request_bodies(setup: Setup, n: int = 2000) -> list[bytes]:
    """``/recommend`` bodies: real test histories of 50-200 items as raw ids, k=10, exclude_seen."""
    rows = [row[row > 0] for row in setup.histories]
    rows = [row for row in rows if len(row) >= 50][:n]
    return [
        json.dumps({"items": setup.raw_ids[row].tolist(), "k": 10, "exclude_seen": True}).encode()
        for row in rows
    ]


@dataclass
class LoadResult:
    """Per answered request: latency and (open loop) how late the client sent it; counts and CPU."""

    latencies_ms: list[float] = field(default_factory=list)
    late_ms: list[float] = field(default_factory=list)  # actual send time - scheduled send time
    offsets_s: list[float] = field(default_factory=list)  # scheduled send time - start of the run
    errors: int = 0
    first_error: str = ""
    started: float = 0.0
    finished: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    other_cpu_s: float = 0.0  # every other process of the machine meanwhile

    def note(self, scheduled: float, sent: float, done: float) -> None:
        self.latencies_ms.append((done - scheduled) * 1e3)
        self.late_ms.append((sent - scheduled) * 1e3)
        self.offsets_s.append(scheduled - self.started)

    def worst(self, n: int = 5) -> str:
        """The ``n`` slowest requests: when they were due, latency and send lateness."""
        order = np.argsort(self.latencies_ms)[::-1][:n]
        return ", ".join(
            f"t={self.offsets_s[i]:.2f}s {self.latencies_ms[i]:.1f} ms (sent {self.late_ms[i]:.1f} ms late)"
            for i in order
        )


class Schedule:
    """Hands out request slots until ``total`` are taken or ``seconds`` pass; with ``rate``, each slot
    has a send time (open loop), else it is sent at once (closed loop). The clock starts at
    :meth:`begin` (the clients call it once their connections are open)."""

    def __init__(self, total: int, seconds: float, rate: float | None) -> None:
        self.total, self.seconds, self.rate, self.taken = total, seconds, rate, 0
        self.lock = threading.Lock()
        self.begin()

    def begin(self) -> float:
        self.start = time.perf_counter()
        self.deadline = self.start + self.seconds
        return self.start

    def take(self) -> tuple[int, float] | None:
        with self.lock:
            now = time.perf_counter()
            if self.taken >= self.total or now >= self.deadline:
                return None
            slot, self.taken = self.taken, self.taken + 1
        return slot, now if self.rate is None else self.start + slot / self.rate


def threaded_client(
    conn: http.client.HTTPConnection,
    bodies: list[bytes],
    schedule: Schedule,
    result: LoadResult,
    lock: threading.Lock,
) -> None:
    """One client: a keep-alive connection (already open), POST /recommend until the schedule runs out."""
    mine, errors, first = LoadResult(started=result.started), 0, ""
    while (slot := schedule.take()) is not None:
        i, send_at = slot
        if (wait := send_at - time.perf_counter()) > 0:
            time.sleep(wait)
        sent = time.perf_counter()
        try:
            conn.request("POST", "/recommend", bodies[i % len(bodies)], HEADERS)
            response = conn.getresponse()
            payload = response.read()
            ok = response.status == 200
            if not ok and not first:
                first = f"HTTP {response.status}: {payload[:200]!r}"
        except (OSError, http.client.HTTPException) as exc:
            ok, first = False, first or f"{type(exc).__name__}: {exc}"
            conn.close()  # http.client reconnects on the next request
        mine.note(send_at if schedule.rate else sent, sent, time.perf_counter())
        errors += not ok
    conn.close()
    with lock:
        result.latencies_ms += mine.latencies_ms
        result.late_ms += mine.late_ms
        result.offsets_s += mine.offsets_s
        result.errors += errors
        result.first_error = result.first_error or first


def raw_requests(bodies: list[bytes]) -> list[bytes]:
    """Each body as one raw HTTP/1.1 keep-alive POST /recommend."""
    return [
        b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
        for body in bodies
    ]


async def async_client(
    connection: tuple[Any, Any], requests: list[bytes], schedule: Schedule, result: LoadResult
) -> None:
    """One client on the event loop: an open keep-alive connection, raw HTTP/1.1 POSTs until the schedule
    runs out. A few dozen microseconds of CPU per request, so the generator takes little from the server."""
    import asyncio

    reader, writer = connection
    try:
        while (slot := schedule.take()) is not None:
            i, send_at = slot
            if (wait := send_at - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            sent = time.perf_counter()
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            payload = await reader.readexactly(length)
            result.note(send_at if schedule.rate else sent, sent, time.perf_counter())
            if head[9:12] != b"200":
                result.errors += 1
                result.first_error = result.first_error or f"{head[:12]!r}: {payload[:200]!r}"
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
        result.errors += 1
        result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
    finally:
        writer.close()


def run_asyncio(port: int, clients: int, bodies: list[bytes], schedule: Schedule, result: LoadResult) -> None:
    """Build the raw requests and open every connection, then start the clock and run one
    :func:`async_client` per connection (nothing the client prepares counts as latency)."""
    import asyncio

    requests = raw_requests(bodies)

    async def run_all() -> None:
        opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(clients)))
        result.started = schedule.begin()
        await asyncio.gather(*(async_client(c, requests, schedule, result) for c in opened))

    asyncio.run(run_all())


def run_threads(port: int, clients: int, bodies: list[bytes], schedule: Schedule, result: LoadResult) -> None:
    """Open every connection, then start the clock and run one :func:`threaded_client` thread each."""
    lock, conns = threading.Lock(), []
    for _ in range(clients):
        conns.append(http.client.HTTPConnection("127.0.0.1", port, timeout=30))
        conns[-1].connect()
    result.started = schedule.begin()
    threads = [
        threading.Thread(target=threaded_client, args=(c, bodies, schedule, result, lock)) for c in conns
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


SCHED_ATTR = "IIQiIQQQ"  # struct sched_attr: size, policy, flags, nice, priority, runtime, deadline, period


@contextlib.contextmanager
def time_slice(ms: float | None) -> Iterator[None]:
    """Run this thread (and the threads it starts) with an EEVDF time slice of ``ms`` (Linux 6.12+:
    ``sched_attr.sched_runtime`` of a normal task; no privilege needed). A short slice lets the load
    generator's timer wake-ups preempt the busy server at once, as a client on its own machine would
    send on time. Does nothing for ``None`` or where the kernel refuses (the table's send-late column
    shows it)."""
    if not ms or sys.platform != "linux":
        yield
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    setattr_nr, getattr_nr = {"x86_64": (314, 315), "aarch64": (274, 275)}.get(os.uname().machine, (0, 0))
    before = ctypes.create_string_buffer(struct.calcsize(SCHED_ATTR) + 8)
    if not setattr_nr or libc.syscall(getattr_nr, 0, before, len(before), 0) != 0:
        yield
        return
    size, policy, flags, nice, prio, runtime, *_ = struct.unpack_from(SCHED_ATTR, before)
    wanted = struct.pack(
        SCHED_ATTR, struct.calcsize(SCHED_ATTR), policy, flags, nice, prio, int(ms * 1e6), 0, 0
    )
    changed = policy == 0 and libc.syscall(setattr_nr, 0, ctypes.create_string_buffer(wanted), 0) == 0
    try:
        yield
    finally:
        if changed:
            back = struct.pack(
                SCHED_ATTR, struct.calcsize(SCHED_ATTR), policy, flags, nice, prio, runtime, 0, 0
            )
            libc.syscall(setattr_nr, 0, ctypes.create_string_buffer(back), 0)


def busy_cpu_seconds() -> float:
    """CPU seconds every process of this machine has spent (all of /proc/stat's busy time)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def load_test(
    server: subprocess.Popen,
    port: int,
    bodies: list[bytes],
    clients: int,
    requests: int,
    seconds: float,
    rate: float | None = None,
    client: str = "asyncio",
    slice_ms: float | None = None,
) -> LoadResult:
    """``clients`` connections sending ``requests`` requests at most, for ``seconds`` at most; also the
    CPU time the server's processes, this (client) process and everything else spent meanwhile.
    ``client``: ``asyncio`` (one event loop, raw HTTP/1.1) or ``threads`` (one ``http.client`` thread
    per connection). Latency counts from the scheduled send time (open loop; no coordinated omission),
    and ``late_ms`` says how late this client sent each request: a late client shows up there."""
    result = LoadResult()
    schedule = Schedule(requests, seconds, rate)  # shared by all clients
    server_cpu, client_cpu, busy = group_cpu_seconds(server.pid), time.process_time(), busy_cpu_seconds()
    gc.collect()
    gc.disable()  # a full collection of this process would show up as server latency
    try:
        with time_slice(slice_ms):
            (run_asyncio if client == "asyncio" else run_threads)(port, clients, bodies, schedule, result)
    finally:
        gc.enable()
    result.finished = time.perf_counter()
    result.server_cpu_s = group_cpu_seconds(server.pid) - server_cpu
    result.client_cpu_s = time.process_time() - client_cpu
    result.other_cpu_s = max(0.0, busy_cpu_seconds() - busy - result.server_cpu_s - result.client_cpu_s)
    return result


def http_row(server: str, mode: str, clients: int, result: LoadResult) -> list[Any]:
    n = len(result.latencies_ms)
    seconds = result.finished - result.started
    p50, p99 = pct(result.latencies_ms) if n else (float("nan"), float("nan"))
    throughput = n / seconds if seconds > 0 else 0.0
    errors = f"{result.errors}" + (f" ({result.first_error})" if result.first_error else "")
    floor = f"{clients / throughput * 1e3:.1f}" if mode == "closed loop" and throughput else "-"
    late = "-"
    if mode != "closed loop" and n:
        late = f"{np.percentile(result.late_ms, 99):.1f} / {max(result.late_ms):.1f}"
    cpu = f"{result.server_cpu_s / max(n, 1) * 1e3:.2f} / {result.client_cpu_s / max(n, 1) * 1e3:.2f}"
    others = f"{result.other_cpu_s / seconds:.2f}" if seconds > 0 else "-"
    numbers = [f"{seconds:.1f}", f"{throughput:.0f}", f"{p50:.1f}", f"{p99:.1f}", floor, late, cpu, others]
    return [server, mode, clients, n, *numbers, errors]


def server_rows(key: str, setup: Setup, bodies: list[bytes], args: argparse.Namespace) -> list[list[Any]]:
    """One server variant: 1 client (single worker), ``--http-clients`` closed loop, and an open loop at
    half the closed-loop rate (or ``--http-rate``) when ``key`` is in ``--open-loop``."""
    spec, rows = SERVERS[key], []
    name = f"{spec.name}, threads={args.server_threads}"
    log(f"HTTP: starting {name}")
    log_dir = Path(tempfile.mkdtemp(prefix="shopformer-serving-logs-")) if spec.logs else None
    server, port = start_server(spec, setup.bundle, args.server_threads, log_dir)
    answered = 0

    def run(clients: int, requests: int, seconds: float, rate: float | None = None) -> LoadResult:
        nonlocal answered
        result = load_test(
            server, port, bodies, clients, requests, seconds, rate, args.client, args.client_slice_ms
        )
        answered += len(result.latencies_ms) - result.errors  # refused requests are not logged
        return result

    try:
        run(4, 100, 30.0)  # warm-up: sessions, thread pool, allocator
        if spec.workers == 1:
            log("HTTP: 1 client")
            rows.append(
                http_row(name, "closed loop", 1, run(1, min(500, args.http_requests), args.http_seconds / 3))
            )
        log(f"HTTP: {args.http_clients} clients, closed loop")
        closed = run(args.http_clients, args.http_requests, args.http_seconds)
        rows.append(http_row(name, "closed loop", args.http_clients, closed))
        if key in args.open_loop:
            measured = len(closed.latencies_ms) / (closed.finished - closed.started)
            rate = args.http_rate or max(1.0, round(0.5 * measured))
            log(
                f"HTTP: {args.http_clients} clients, open loop at {rate:.0f} req/s "
                f"(load average {os.getloadavg()[0]:.1f})"
            )
            seconds = args.http_seconds / 2
            opened = run(args.http_clients, int(rate * seconds), seconds, rate)
            log(f"HTTP: slowest open-loop requests: {opened.worst()}")
            rows.append(http_row(name, f"open loop, {rate:.0f} req/s offered", args.http_clients, opened))
    finally:
        stop_server(server)
    if log_dir is not None:
        logged = count_logged(log_dir)
        log(f"HTTP: {name}: {logged:,} impression rows for {answered:,} answered requests")
        for row in rows:
            row[0] = f"{row[0]}; log rows / answered: {logged:,} / {answered:,}"
    return rows


def count_logged(log_dir: Path) -> int:
    """Rows of the impression log a stopped server left (every journal sealed into Parquet)."""
    from shopformer.serve.event_log import read_log

    return read_log(log_dir / "impressions", "impressions", include_open=True).num_rows


def http_section(setup: Setup, args: argparse.Namespace) -> tuple[list[list[Any]], list[list[Any]]]:
    """The rows of every server variant in ``--servers``, ``--rounds`` times (each round starts one
    server later, so that no variant always runs first), and the closed-loop summary per variant."""
    bodies = request_bodies(setup)
    order = list(args.servers)
    rounds = []
    for r in range(args.rounds):
        shift = r % len(order)
        for key in order[shift:] + order[:shift]:
            rounds.append((key, server_rows(key, setup, bodies, args)))
    return [row for _, rows in rounds for row in rows], throughput_summary(rounds, args.http_clients)


def _closed_loop(
    rounds: list[tuple[str, list[list[Any]]]], clients: int
) -> dict[str, list[tuple[float, float]]]:
    """Per variant, in run order: (req/s, server CPU ms per request) of each closed loop at ``clients``."""
    found: dict[str, list[tuple[float, float]]] = {}
    for key, rows in rounds:
        for row in rows:
            if row[1] == "closed loop" and row[2] == clients:
                found.setdefault(key, []).append((float(row[5]), float(str(row[10]).split(" / ")[0])))
    return found


def _paired(values: list[float], base: list[float], invert: bool = False) -> str:
    """Median and range of the per-round ratios value / base (base / value with ``invert``): the
    n-th run of a variant against the plain server's n-th, which ran in the same round."""
    ratios = [b / v if invert else v / b for v, b in zip(values, base, strict=False) if v > 0 and b > 0]
    if not ratios:
        return "-"
    return f"{np.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def throughput_summary(rounds: list[tuple[str, list[list[Any]]]], clients: int) -> list[list[Any]]:
    """Per server variant: its closed-loop req/s at ``clients`` in every round, the median, and
    against the plain server (``cli``) of the same round: the median of the per-round throughput
    ratios, and of the ratios of server CPU per request (plain / variant: the capacity the CPU
    cost implies, steadier than throughput on a shared machine, where rounds vary by +-15 %)."""
    found = _closed_loop(rounds, clients)
    plain = found.get("cli", [])
    out = []
    for key, runs in found.items():
        rates, cpu = [r for r, _ in runs], [c for _, c in runs]
        vs_rate = _paired(rates, [r for r, _ in plain]) if plain else "-"
        vs_cpu = _paired(cpu, [c for _, c in plain], invert=True) if plain else "-"
        per_round = " / ".join(f"{v:.0f}" for v in rates)
        out.append([SERVERS[key].name, len(runs), per_round, f"{np.median(rates):.0f}", vs_rate, vs_cpu])
    return out


def http_stack() -> str:
    """What uvicorn's ``auto`` picks here: httptools or h11, uvloop or asyncio."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11 (no httptools)"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio (no uvloop)"
    return f"uvicorn HTTP parser {http}, event loop {loop}"


# -- main -------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="trained ML-1M checkpoint (exported to a temporary bundle)")
    parser.add_argument("--bundle", help="existing ML-1M bundle directory (torch rows need --ckpt too)")
    parser.add_argument("--quick", action="store_true", help="100k catalogue, fewer calls and requests")
    parser.add_argument("--catalog", type=int, help="synthetic catalogue size (default 1,000,000)")
    parser.add_argument("--noise", type=float, default=0.5, help="synthetic noise scale (x item covariance)")
    parser.add_argument("--queries", type=int, default=1000, help="real query vectors for FAISS")
    parser.add_argument("--ivf-nlist", type=int, help="IVF lists on the synthetic catalogue (default 4096)")
    parser.add_argument(
        "--hnsw",
        nargs="+",
        type=lambda text: tuple(int(x) for x in text.split(":")),
        default=[(32, 40), (32, 200), (64, 200)],
        help="HNSW builds on the synthetic catalogue as M:efConstruction (default 32:40 32:200 64:200)",
    )
    parser.add_argument("--ef-search", nargs="+", type=int, default=[128, 256, 512, 1024])
    parser.add_argument("--flat-latency-queries", type=int, help="batch-1 Flat searches timed (default 200)")
    parser.add_argument("--batch1-calls", type=int, help="timed batch-1 encoder calls (default 300)")
    parser.add_argument("--batch256-calls", type=int, help="timed batch-256 encoder calls (default 20)")
    parser.add_argument("--http-requests", type=int, help="request cap per load test (default 20,000)")
    parser.add_argument("--http-seconds", type=float, help="time cap per load test (default 30)")
    parser.add_argument("--http-clients", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=1, help="run --servers this many times, each round rotated by one"
    )
    parser.add_argument("--http-rate", type=float, help="open-loop rate (default: half the closed-loop rate)")
    parser.add_argument(
        "--servers", nargs="+", default=["cli", "unbatched", "workers2"], choices=list(SERVERS)
    )
    parser.add_argument(
        "--open-loop",
        nargs="*",
        default=["cli", "workers2"],
        choices=list(SERVERS),
        help="servers also measured in an open loop at half their closed-loop rate (default cli workers2)",
    )
    parser.add_argument(
        "--client", default="asyncio", choices=["asyncio", "threads"], help="load generator (default asyncio)"
    )
    parser.add_argument(
        "--client-slice-ms",
        type=float,
        default=0.1,
        help="the load generator's EEVDF time slice in ms (Linux 6.12+; 0: the kernel's; default 0.1)",
    )
    parser.add_argument("--server-threads", type=int, default=1, help="onnxruntime intra-op threads (server)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["encoder", "faiss", "http"])
    args = parser.parse_args(argv)
    if args.ckpt and not Path(args.ckpt).is_file():
        parser.error(f"--ckpt {args.ckpt}: no such file")
    defaults = {
        "catalog": (1_000_000, 100_000),
        "ivf_nlist": (4096, 1024),
        "flat_latency_queries": (200, 100),
        "batch1_calls": (300, 100),
        "batch256_calls": (20, 5),
        "http_requests": (20000, 2000),
        "http_seconds": (30.0, 10.0),
    }
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


ENCODER_COLUMNS = ["input", "threads", "calls", "ORT p50 ms", "ORT p99 ms", "torch p50 ms", "torch p99 ms"]
FAISS_COLUMNS = ["catalogue", "index", "setting", "build s", "p50 ms", "p99 ms", "recall@100"]
HTTP_COLUMNS = [
    "server",
    "load",
    "clients",
    "requests",
    "s",
    "req/s",
    "p50 ms",
    "p99 ms",
    "clients / req/s ms",
    "send late p99 / max ms",
]


def run_sections(setup: Setup, args: argparse.Namespace) -> None:
    """Measure and print every section not in ``--skip``, one table each."""
    from shopformer.serve.recommender import Recommender

    rec = Recommender.load(setup.bundle, threads=1, faiss_threads=1)
    if rec.inputs != ["item_ids"]:
        sys.exit(f"error: this benchmark feeds item ids only; the encoder also takes {rec.inputs[1:]}")
    dim = rec.items.shape[1]
    if "encoder" not in args.skip:
        rows = encoder_rows(setup, args) + recommend_rows(setup, rec, args)
        print(f"\n## Encoder latency, ML-1M ({setup.how}; {rec.n_items - 1:,} items, D={dim})\n")
        print("onnxruntime: intra-op threads as in `threads`, 1 inter-op thread, sequential (as serving);")
        print("torch eager: `torch.set_num_threads(threads)`, `no_grad`, `model.encode`; same inputs\n")
        print(table([*ENCODER_COLUMNS, "torch / ORT (p50)"], rows), flush=True)
    if "faiss" not in args.skip:
        rows, note = faiss_section(setup, rec, args)
        print(f"\n## FAISS, D={dim}, {args.queries} real ML-1M queries, k={K_RECALL}\n")
        print(f"{note}.\nBuild: 2 FAISS threads. Latency: batch 1, 1 FAISS thread, k={K_RECALL}", end=" ")
        print(
            f"(HNSW searches with ef = max(efSearch, k)). Recall@{K_RECALL}: against Flat, same catalogue.\n"
        )
        print(table([*FAISS_COLUMNS, "speed-up vs Flat (p50)"], rows), flush=True)
    if "http" not in args.skip:
        rows, summary = http_section(setup, args)
        print(f"\n## HTTP POST /recommend on loopback (ML-1M histories, 50-{MAX_LEN} raw ids, k=10)\n")
        how = {"asyncio": "one asyncio loop, raw HTTP/1.1", "threads": "Python threads, http.client"}[
            args.client
        ]
        slice_note = f", time slice {args.client_slice_ms:g} ms" if args.client_slice_ms else ""
        print(f"{http_stack()}; client: {how}{slice_note}, keep-alive connections, same machine\n")
        columns = [*HTTP_COLUMNS, "CPU ms / req server / client", "other processes, cores", "errors"]
        print(table(columns, rows), flush=True)
        print(
            f"\n### Closed loop, {args.http_clients} clients: req/s per round and against the plain server\n"
        )
        columns = ["server", "rounds", "req/s per round", "median", "vs plain, req/s", "vs plain, CPU / req"]
        print(table(columns, summary), flush=True)
        print("\n(vs plain: the median of the per-round ratios, with their range; CPU / req as plain / this)")


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    args = parse_args(argv[1:])
    os.environ.setdefault("SHOPFORMER_DATA", "../shared/data")
    import torch

    torch.set_num_threads(1)
    began = time.perf_counter()
    print(header(argv), flush=True)
    with tempfile.TemporaryDirectory(prefix="shopformer-serving-bench-") as tmp:
        run_sections(prepare(args, Path(tmp)), args)
    print(f"\ntotal {time.perf_counter() - began:.0f} s", flush=True)


if __name__ == "__main__":
    main()
