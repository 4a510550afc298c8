"""FAISS retrieval over the item table: built from an index-factory string, inner product, ids offset by one.

Row 0 of the item table is padding and is not indexed: FAISS id ``j`` is internal item ``j + 1``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import faiss
import numpy as np

from shopformer.errors import ConfigError

# Below this many query x item pairs FAISS skips BLAS; its default (128k) makes batch search
# over large catalogues an order of magnitude slower (see shared STACK.md).
faiss.cvar.distance_compute_blas_threshold = 20

SEARCH_PARAMETERS = ("nprobe", "efSearch")
BUILD_PARAMETERS = ("efConstruction",)  # shape the index while it is built; stored in the index file
# k-means for IVF lists converges on a sample: FAISS suggests 30..256 points per list.
TRAIN_POINTS_PER_LIST = 64


class IndexConfigError(ConfigError):
    """An index spec that cannot be built for this item table."""


def build_index(
    items: np.ndarray, factory: str = "Flat", params: dict[str, Any] | None = None
) -> faiss.Index:
    """An inner-product index over ``items[1:]`` built by ``faiss.index_factory``, trained if it needs it."""
    vectors = np.ascontiguousarray(items[1:], dtype=np.float32)
    n, dim = vectors.shape
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown"
        raise IndexConfigError(f"FAISS index factory string {factory!r} is not valid: {first}") from None
    if not index.is_trained:
        nlist = getattr(faiss.extract_index_ivf(index), "nlist", 0) if "IVF" in factory else 0
        if nlist and n < nlist:
            raise IndexConfigError(
                f"index {factory!r} needs at least {nlist} items to train its {nlist} lists; "
                f"the catalogue has {n}"
            )
        index.train(_training_sample(vectors, nlist))
    set_build_params(index, params or {})
    index.add(vectors)
    set_search_params(index, params or {})
    return index


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


def set_build_params(index: faiss.Index, params: dict[str, Any]) -> None:
    """Apply ``efConstruction`` (HNSW: candidates kept while linking each new item; FAISS's default
    40 gives a graph whose recall@100 tops out near 0.94 on a million items) before items are added."""
    if params.get("efConstruction") is None:
        return
    graph = getattr(faiss.downcast_index(index), "hnsw", None)
    if graph is None:
        raise IndexConfigError("efConstruction applies to HNSW indexes only")
    graph.efConstruction = int(params["efConstruction"])


def _training_sample(vectors: np.ndarray, nlist: int) -> np.ndarray:
    """At most ``TRAIN_POINTS_PER_LIST * nlist`` rows, drawn with a fixed seed (the build is reproducible)."""
    limit = TRAIN_POINTS_PER_LIST * nlist
    if not nlist or len(vectors) <= limit:
        return vectors
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), size=limit, replace=False))
    return vectors[rows]


def set_search_params(index: faiss.Index, params: dict[str, Any]) -> None:
    """Apply ``nprobe`` / ``efSearch`` (those the index has) through FAISS's ParameterSpace."""
    unknown = sorted(set(params) - set(SEARCH_PARAMETERS) - set(BUILD_PARAMETERS))
    if unknown:
        raise IndexConfigError(
            f"unknown index parameter(s) {unknown}; known: {list(SEARCH_PARAMETERS + BUILD_PARAMETERS)}"
        )
    params = {key: value for key, value in params.items() if key in SEARCH_PARAMETERS}
    if params:
        spec = ",".join(f"{key}={int(value)}" for key, value in params.items())
        try:
            faiss.ParameterSpace().set_index_parameters(index, spec)
        except RuntimeError as exc:
            raise IndexConfigError(f"cannot set {spec!r} on this index: {exc}") from None


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, internal item ids) per query; missing slots have id 0 and score -inf."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, index.ntotal)
    scores, ids = index.search(queries, k)
    missing = ids < 0
    return np.where(missing, -np.inf, scores).astype(np.float32), np.where(missing, 0, ids + 1)


def exact_index(items: np.ndarray) -> faiss.Index:
    return build_index(items, "Flat")


def measure_recall(
    index: faiss.Index, items: np.ndarray, queries: np.ndarray, k: int = 100
) -> dict[str, Any]:
    """Recall@k of ``index`` against exact search on ``queries``, and both search times."""
    exact = exact_index(items)
    k = min(k, index.ntotal)
    started = time.perf_counter()
    _, truth = search(exact, queries, k)
    exact_s = time.perf_counter() - started
    started = time.perf_counter()
    _, found = search(index, queries, k)
    approx_s = time.perf_counter() - started
    hits = sum(len(np.intersect1d(t, f)) for t, f in zip(truth, found, strict=True))
    return {
        "k": k,
        "value": round(hits / (k * len(queries)), 6),
        "n_queries": len(queries),
        "exact_seconds": round(exact_s, 6),
        "index_seconds": round(approx_s, 6),
    }


def write_index(index: faiss.Index, path: str | os.PathLike) -> None:
    faiss.write_index(index, str(path))


def read_index(path: str | os.PathLike, params: dict[str, Any] | None = None) -> faiss.Index:
    index = faiss.read_index(str(path))
    set_search_params(index, params or {})
    return index
