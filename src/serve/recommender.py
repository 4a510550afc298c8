"""The recommender: a bundle's ONNX encoder, item vectors and FAISS index behind one object.

``Recommender.load(source)`` takes a bundle directory or an MLflow URI (see
:mod:`shopformer.serve.mlflow_source`).

A session (:class:`~shopformer.serve.sessions.Session`) is a list of raw item ids, oldest first,
with optional event type names and unix timestamps. Raw ids the catalogue does not know are dropped
from the history and reported back in ``unknown_items``; a session with no known item left is
answered with no items (the caller falls back to its own default, e.g. best sellers): the bundle
holds no popularity to fall back on. Retrieval after business rules: :mod:`shopformer.serve.retrieval`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import onnxruntime as ort

from shopformer.data.vocab import PAD
from shopformer.errors import RequestError
from shopformer.serve.bundle import INDEX, BundleError, BundleFiles, open_bundle
from shopformer.serve.encoding import (
    ENCODER_INPUTS,
    EVENT_TYPES,
    GAP_BUCKETS,
    ITEM_IDS,
    EncodedSessions,
    SessionEncoder,
    length_groups,
)
from shopformer.serve.index import SEARCH_PARAMETERS, IndexConfigError, read_index
from shopformer.serve.journey import JourneyScore, JourneyScorer, NoJourneyModel
from shopformer.serve.mlflow_source import local_bundle
from shopformer.serve.onnx_session import onnx_session
from shopformer.serve.retrieval import Plan, retrieve
from shopformer.serve.rules import Filters, ItemAttributes, Rules
from shopformer.serve.sessions import Session, check_k, parse_session


@dataclass
class Recommendation:
    """Top items as (raw id, score), best first, and the raw ids the catalogue did not know."""

    items: list[tuple[Any, float]] = field(default_factory=list)
    unknown_items: list[Any] = field(default_factory=list)


class Recommender:
    """Answers sessions with top-k items; safe to share between threads (read-only after load)."""

    def __init__(
        self,
        bundle: BundleFiles,
        *,
        threads: int = 1,
        faiss_threads: int = 1,
        index_params: Mapping[str, Any] | None = None,
        source: str | None = None,
    ) -> None:
        self.manifest = bundle.manifest
        self.source = source or str(bundle.directory)
        self.loaded_at = time.time()
        self.items = bundle.items
        self.attributes = ItemAttributes(bundle.vocab)
        self.raw_ids = bundle.vocab["item_id"].to_numpy()
        self.max_len = int(self.manifest["max_len"])
        self.min_len = max(1, int(self.manifest.get("min_len", 1)))
        self.event_vocab = list(self.manifest.get("event_vocab") or [])
        self.session = _encoder_session(bundle, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.output = _query_output(self.session)
        self._check_inputs(bundle)
        self.encoder = SessionEncoder(
            self.attributes, self.inputs, self.max_len, self.min_len, self.event_vocab
        )
        # The journey heads (journey.onnx), when the bundle has them: see shopformer.serve.journey.
        self.journey = JourneyScorer(bundle, threads, self.inputs) if bundle.journey_path else None
        self.faiss_threads = max(1, int(faiss_threads))
        faiss.omp_set_num_threads(self.faiss_threads)
        self.index = _read_index(bundle, index_params)

    @classmethod
    def load(
        cls,
        source: str | os.PathLike,
        *,
        threads: int = 1,
        faiss_threads: int = 1,
        index_params: Mapping[str, Any] | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> Recommender:
        """Open a bundle directory or MLflow URI (downloaded into ``cache_dir``, else a temp dir)."""
        source = str(source)
        options = {"threads": threads, "faiss_threads": faiss_threads, "index_params": index_params}
        # Everything is in memory once loaded, so a temporary download need not outlive the load.
        with local_bundle(source, cache_dir) as directory:
            return cls(open_bundle(directory), source=source, **options)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def n_items(self) -> int:
        return int(self.manifest["n_items"])

    def recommend(
        self,
        items: Sequence[Any],
        event_types: Sequence[str] | None = None,
        timestamps: Sequence[int] | None = None,
        k: int = 10,
        exclude_seen: bool = True,
        filters: Mapping[str, Any] | Filters | None = None,
    ) -> Recommendation:
        """Top-``k`` items for one session (see :class:`Session`)."""
        session = Session(items, event_types, timestamps, k, exclude_seen, filters)
        try:
            return self.recommend_batch([session])[0]
        except RequestError as exc:
            raise type(exc)(exc.loc[1:], exc.message) from None  # drop the batch position

    def recommend_batch(self, sessions: Sequence[Session | Mapping[str, Any]]) -> list[Recommendation]:
        """Answer many sessions with one encoder call and one FAISS search (plus widening rounds)."""
        sessions = [s if isinstance(s, Session) else parse_session(s, i) for i, s in enumerate(sessions)]
        rules = [self._rules(s.filters, i) for i, s in enumerate(sessions)]
        for i, s in enumerate(sessions):
            check_k(s.k, (i, "k"))
        encoded = self.encode(sessions)
        out = [Recommendation(unknown_items=unknown) for unknown in encoded.unknown]
        if not encoded.rows.size:
            return out
        queries = self.query_vectors(encoded.inputs)
        plans = [
            Plan(sessions[r].k, seen if sessions[r].exclude_seen else None, rules[r])
            for r, seen in zip(encoded.rows, encoded.seen, strict=True)
        ]
        for r, (ids, scores) in zip(encoded.rows, self.retrieve(queries, plans), strict=True):
            out[r].items = self._decode(ids, scores)
        return out

    def recommend_arrays(
        self,
        item_ids: np.ndarray,
        event_types: np.ndarray | None = None,
        gap_buckets: np.ndarray | None = None,
        k: int = 10,
        exclude_seen: bool = True,
        filters: Mapping[str, Any] | Filters | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` internal ids and scores [B, k] for encoded, left-padded histories.

        The fast path for benchmarks and batch jobs: no raw-id mapping, no per-row Python objects
        beyond the rule step. Rows with fewer than ``k`` eligible items are padded with id 0 / -inf.
        """
        check_k(k, ("k",))
        inputs = {ITEM_IDS: item_ids, EVENT_TYPES: event_types, GAP_BUCKETS: gap_buckets}
        missing = [name for name in self.inputs if inputs[name] is None]
        if missing:
            raise RequestError((missing[0],), f"this model's encoder needs {', '.join(missing)}")
        item_ids = np.asarray(item_ids, dtype=np.int64)
        queries = self.query_vectors({name: np.asarray(inputs[name], dtype=np.int64) for name in self.inputs})
        rules = self._rules(filters, None)
        plans = [Plan(k, np.unique(row[row > 0]) if exclude_seen else None, rules) for row in item_ids]
        ids = np.zeros((len(plans), k), dtype=np.int64)
        scores = np.full((len(plans), k), -np.inf, dtype=np.float32)
        for row, (found, found_scores) in enumerate(self.retrieve(queries, plans)):
            ids[row, : found.size], scores[row, : found.size] = found, found_scores
        return ids, scores

    def journey_batch(self, sessions: Sequence[Session | Mapping[str, Any]]) -> list[JourneyScore]:
        """Next-event-type, conversion and abandonment probabilities per session (needs journey.onnx)."""
        return self.require_journey().score(self.encoder, sessions)

    def require_journey(self) -> JourneyScorer:
        """The bundle's journey scorer; :class:`NoJourneyModel` when it has no ``journey.onnx``."""
        if self.journey is None:
            raise NoJourneyModel(
                (),
                f"bundle {self.name} {self.version} has no journey model (journey.onnx); serve a bundle "
                "exported from a journey experiment",
            )
        return self.journey

    def similar(
        self, item_id: Any, k: int = 10, filters: Mapping[str, Any] | Filters | None = None
    ) -> Recommendation:
        """Items whose vectors score highest against ``item_id``'s vector (the item itself excluded)."""
        check_k(k, ("k",))
        rules = self._rules(filters, None)
        internal = self.attributes.encode([item_id])
        if not internal[0]:
            return Recommendation(unknown_items=[item_id])
        query = self.items[internal]
        (ids, scores), *_ = self.retrieve(query, [Plan(k, internal, rules)])
        return Recommendation(items=self._decode(ids, scores))

    def encode(self, sessions: Sequence[Session]) -> EncodedSessions:
        """Encoder inputs of the sessions with known items (see :class:`SessionEncoder`)."""
        return self.encoder.encode(sessions)

    def query_vectors(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """One encoder run: float32 [B, D] query vectors for left-padded int64 inputs (cut to the
        last ``max_len`` columns, left-padded to ``min_len``)."""
        feeds = {name: self.encoder.fit(np.asarray(inputs[name], dtype=np.int64)) for name in self.inputs}
        lengths = (feeds[ITEM_IDS] != PAD).sum(axis=1)
        groups = length_groups(lengths)
        if len(groups) == 1:
            (queries,) = self.session.run([self.output], feeds)
            return np.ascontiguousarray(queries, dtype=np.float32)
        # Rows of similar length run together, each group cut to its own longest row: padding a
        # 50-item history to a 200-item neighbour costs more than the extra encoder calls.
        queries = np.empty((len(lengths), self.items.shape[1]), dtype=np.float32)
        for rows in groups:
            width = max(int(lengths[rows].max()), self.min_len)
            (queries[rows],) = self.session.run(
                [self.output], {n: f[rows, -width:] for n, f in feeds.items()}
            )
        return queries

    def retrieve(self, queries: np.ndarray, plans: Sequence[Plan]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top items per query after rules: one FAISS search for all, then wider ones where needed."""
        return retrieve(self.index, queries, plans, self.faiss_threads)

    def metadata(self) -> dict[str, Any]:
        """The manifest plus where the bundle came from and what rules can filter on."""
        return {
            **self.manifest,
            "source": self.source,
            "loaded_at": self.loaded_at,
            "attributes": self.attributes.describe(),
        }

    def _rules(self, filters: Mapping[str, Any] | Filters | None, i: int | None) -> Rules | None:
        if filters is None or (isinstance(filters, Mapping | Filters) and not filters):
            return None
        try:
            rules = Rules(filters, self.attributes)
        except RequestError as exc:
            raise exc if i is None else exc.within(i) from None
        return None if rules.filters.empty else rules

    def _decode(self, ids: np.ndarray, scores: np.ndarray) -> list[tuple[Any, float]]:
        return list(zip(self.raw_ids[ids - 1].tolist(), scores.astype(float).tolist(), strict=True))

    def _check_inputs(self, bundle: BundleFiles) -> None:
        declared, actual = list(self.manifest["inputs"]), self.inputs
        if set(declared) != set(actual) or ITEM_IDS not in actual:
            raise BundleError(
                f"bundle {bundle.directory}: encoder inputs {actual} differ from manifest inputs {declared}"
            )
        unknown = sorted(set(actual) - set(ENCODER_INPUTS))
        if unknown:
            raise BundleError(f"bundle {bundle.directory}: encoder input(s) {unknown} are not served")
        if EVENT_TYPES in actual and len(self.event_vocab) < 2:
            raise BundleError(
                f"bundle {bundle.directory}: encoder takes event_types but event_vocab is empty"
            )


def _encoder_session(bundle: BundleFiles, threads: int) -> ort.InferenceSession:
    try:
        return onnx_session(bundle.encoder_path, threads)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise BundleError(f"bundle {bundle.directory}: cannot load encoder.onnx ({exc})") from None


def _query_output(session: ort.InferenceSession) -> str:
    names = [o.name for o in session.get_outputs()]
    return "query" if "query" in names else names[0]


def _read_index(bundle: BundleFiles, override: Mapping[str, Any] | None) -> faiss.Index:
    spec = bundle.manifest.get("index") or {}
    params = {k: v for k, v in (spec.get("params") or {}).items() if k in SEARCH_PARAMETERS and v is not None}
    params.update(override or {})
    try:
        index = read_index(bundle.directory / INDEX, params)
    except (IndexConfigError, RuntimeError) as exc:
        raise BundleError(f"bundle {bundle.directory}: cannot read {INDEX} ({exc})") from None
    n_items, dim = int(bundle.manifest["n_items"]), int(bundle.manifest["dim"])
    if index.ntotal != n_items - 1 or index.d != dim:
        raise BundleError(
            f"bundle {bundle.directory}: {INDEX} holds {index.ntotal} vectors of dim {index.d}, "
            f"expected {n_items - 1} of dim {dim}"
        )
    return index
