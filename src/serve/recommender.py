"""The recommender: a bundle's ONNX encoder, item vectors and FAISS index behind one object.

``Recommender.load(source)`` takes a bundle directory, ``runs:/<run_id>/<path>`` or
``models:/<name>/<version>`` / ``models:/<name>@<alias>`` (MLflow is imported only for those).

A session is a list of raw item ids, oldest first, with optional event type names and unix
timestamps. Raw ids the catalogue does not know are dropped from the history and reported back in
``unknown_items``; a session with no known item left is answered with no items (the caller
falls back to its own default, e.g. best sellers): the bundle holds no popularity to fall back on,
and an encoder run on an empty history gives an arbitrary vector.

Retrieval over-fetches (k + history + room for filters) and widens the FAISS search geometrically,
up to the whole catalogue, until k eligible items are found and no unfetched item could outrank
them through a boost; with a flat index the answer equals exact top-k of the boosted scores.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import onnxruntime as ort

from shopformer.data.features import GAP_PAD, gap_buckets
from shopformer.data.vocab import PAD, PAD_TOKEN, encode_events
from shopformer.serve.bundle import INDEX, BundleError, BundleFiles, open_bundle
from shopformer.serve.index import SEARCH_PARAMETERS, IndexConfigError, read_index, search
from shopformer.serve.journey import JourneyScore, JourneyScorer, score_journeys
from shopformer.serve.rules import Filters, ItemAttributes, RequestError, Rules, in_sorted

ITEM_IDS, EVENT_TYPES, GAP_BUCKETS = "item_ids", "event_types", "gap_buckets"
ENCODER_INPUTS = (ITEM_IDS, EVENT_TYPES, GAP_BUCKETS)
DEFAULT_EVENT_TYPE = "view"  # what the data schema assumes when events carry no type
MLFLOW_SCHEMES = ("runs:/", "models:/")
PROJECT_STORE = "mlflow/mlflow.db"  # training's default tracking store, relative to the working directory
WIDEN = 4  # growth factor of the candidate list when rules leave fewer than k items


@dataclass(frozen=True)
class Session:
    """One request: raw item ids oldest first, optional event types and timestamps, and options."""

    items: Sequence[Any]
    event_types: Sequence[str] | None = None
    timestamps: Sequence[int] | None = None
    k: int = 10
    exclude_seen: bool = True
    filters: Mapping[str, Any] | Filters | None = None


@dataclass
class Recommendation:
    """Top items as (raw id, score), best first, and the raw ids the catalogue did not know."""

    items: list[tuple[Any, float]] = field(default_factory=list)
    unknown_items: list[Any] = field(default_factory=list)


@dataclass
class EncodedSessions:
    """Encoder inputs for the sessions that have known items (left-padded int64 [B, L])."""

    rows: np.ndarray  # position in the request of each encoded row
    inputs: dict[str, np.ndarray]
    seen: list[np.ndarray]  # every known internal id of each row's full history
    unknown: list[list[Any]]  # per request (all of them, not just encoded rows)


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
        self.session = _onnx_session(bundle, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.output = _query_output(self.session)
        self._check_inputs(bundle)
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
        if not source.startswith(MLFLOW_SCHEMES):
            return cls(open_bundle(source), source=source, **options)
        if cache_dir is not None:
            return cls(open_bundle(download(source, cache_dir)), source=source, **options)
        # Everything is in memory once loaded, so the download need not outlive the load.
        with tempfile.TemporaryDirectory(prefix="shopformer-bundle-") as tmp:
            return cls(open_bundle(download(source, tmp)), source=source, **options)

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
        sessions = [s if isinstance(s, Session) else _session(s, i) for i, s in enumerate(sessions)]
        rules = [self._rules(s.filters, i) for i, s in enumerate(sessions)]
        for i, s in enumerate(sessions):
            _check_k(s.k, (i, "k"))
        encoded = self.encode(sessions)
        out = [Recommendation(unknown_items=unknown) for unknown in encoded.unknown]
        if not encoded.rows.size:
            return out
        queries = self.query_vectors(encoded.inputs)
        plans = [
            _Plan(sessions[r].k, seen if sessions[r].exclude_seen else None, rules[r])
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
        _check_k(k, ("k",))
        inputs = {ITEM_IDS: item_ids, EVENT_TYPES: event_types, GAP_BUCKETS: gap_buckets}
        missing = [name for name in self.inputs if inputs[name] is None]
        if missing:
            raise RequestError((missing[0],), f"this model's encoder needs {', '.join(missing)}")
        item_ids = np.asarray(item_ids, dtype=np.int64)
        queries = self.query_vectors({name: np.asarray(inputs[name], dtype=np.int64) for name in self.inputs})
        rules = self._rules(filters, None)
        plans = [_Plan(k, np.unique(row[row > 0]) if exclude_seen else None, rules) for row in item_ids]
        ids = np.zeros((len(plans), k), dtype=np.int64)
        scores = np.full((len(plans), k), -np.inf, dtype=np.float32)
        for row, (found, found_scores) in enumerate(self.retrieve(queries, plans)):
            ids[row, : found.size], scores[row, : found.size] = found, found_scores
        return ids, scores

    def journey_batch(self, sessions: Sequence[Session | Mapping[str, Any]]) -> list[JourneyScore]:
        """Next-event-type, conversion and abandonment probabilities per session (needs journey.onnx)."""
        return score_journeys(self, sessions)

    def similar(
        self, item_id: Any, k: int = 10, filters: Mapping[str, Any] | Filters | None = None
    ) -> Recommendation:
        """Items whose vectors score highest against ``item_id``'s vector (the item itself excluded)."""
        _check_k(k, ("k",))
        rules = self._rules(filters, None)
        internal = self.attributes.encode([item_id])
        if not internal[0]:
            return Recommendation(unknown_items=[item_id])
        query = self.items[internal]
        (ids, scores), *_ = self.retrieve(query, [_Plan(k, internal, rules)])
        return Recommendation(items=self._decode(ids, scores))

    def encode(self, sessions: Sequence[Session]) -> EncodedSessions:
        """Map raw ids to internal ids (one vocabulary lookup for the whole batch), drop unknown ones,
        compute event-type and gap-bucket channels, keep the last ``max_len`` and left-pad."""
        for i, s in enumerate(sessions):
            _check_session(s, i)
        lengths = np.array([len(s.items) for s in sessions], dtype=np.int64)
        flat = [item for s in sessions for item in s.items]
        codes = self.attributes.encode(flat)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        rows, channels, seen, unknown = [], [], [], []
        for i, s in enumerate(sessions):
            row_codes = codes[bounds[i] : bounds[i + 1]]
            known = row_codes > 0
            unknown.append([item for item, ok in zip(s.items, known, strict=True) if not ok])
            if not known.any():
                continue
            rows.append(i)
            seen.append(np.unique(row_codes[known]))
            channels.append(self._channels(s, row_codes, known, i))
        inputs = self._pad(channels)
        return EncodedSessions(np.array(rows, dtype=np.int64), inputs, seen, unknown)

    def query_vectors(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """One encoder run: float32 [B, D] query vectors for left-padded int64 inputs (cut to the
        last ``max_len`` columns, left-padded to ``min_len``)."""
        feeds = {name: self._fit(np.asarray(inputs[name], dtype=np.int64)) for name in self.inputs}
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

    def retrieve(self, queries: np.ndarray, plans: Sequence[_Plan]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top items per query after rules: one FAISS search for all, then wider ones where needed."""
        total = self.index.ntotal
        fetch = np.array([min(total, p.initial_fetch()) for p in plans], dtype=np.int64)
        results: list[Any] = [None] * len(plans)
        pending = np.arange(len(plans))
        # OpenMP's thread count is per calling thread: a batcher or thread-pool thread starts with the
        # machine's default, and idle OpenMP workers spin (measured: 2x the server CPU per request).
        faiss.omp_set_num_threads(self.faiss_threads)
        while pending.size:
            depth = int(fetch[pending].max())
            scores, ids = search(self.index, queries[pending], depth)
            again = []
            for row, i in enumerate(pending):
                found = plans[i].select(ids[row], scores[row], exhaustive=depth >= total)
                if found is None:
                    fetch[i] = min(total, depth * WIDEN)
                    again.append(i)
                else:
                    results[i] = found
            pending = np.array(again, dtype=np.int64)
        return results

    def metadata(self) -> dict[str, Any]:
        """The manifest plus where the bundle came from and what rules can filter on."""
        return {
            **self.manifest,
            "source": self.source,
            "loaded_at": self.loaded_at,
            "attributes": self.attributes.describe(),
        }

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
        names = [DEFAULT_EVENT_TYPE] * len(s.items) if s.event_types is None else list(s.event_types)
        codes = encode_events(names, self.event_vocab).astype(np.int64)
        bad = [name for name, code in zip(names, codes, strict=True) if code == PAD]
        if bad:
            known = ", ".join(e for e in self.event_vocab if e != PAD_TOKEN)
            what = "unknown event type" if s.event_types is not None else "required (no default type)"
            raise RequestError((i, "event_types"), f"{what} {bad[0]!r}; this model knows: {known}")
        return codes

    def _fit(self, array: np.ndarray) -> np.ndarray:
        array = array[:, -self.max_len :]
        if array.shape[1] < self.min_len:
            array = np.pad(
                array, ((0, 0), (self.min_len - array.shape[1], 0))
            )  # pad ids are 0 in every channel
        return np.ascontiguousarray(array)

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


@dataclass
class _Plan:
    """What one query needs from retrieval: k, the items to exclude, the rules."""

    k: int
    seen: np.ndarray | None
    rules: Rules | None

    def initial_fetch(self) -> int:
        seen = 0 if self.seen is None else self.seen.size
        room = self.k + 32 if self.rules is not None else 0
        return self.k + seen + room

    def select(
        self, ids: np.ndarray, scores: np.ndarray, exhaustive: bool
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The top-k eligible candidates, or None when a wider search could change the answer."""
        if self.rules is not None:
            keep, adjusted = self.rules.apply(ids, scores, self.seen)
        else:
            keep = ids > 0
            if self.seen is not None and self.seen.size:
                keep &= ~in_sorted(ids, self.seen)
            adjusted = scores
        eligible = np.flatnonzero(keep)
        top = eligible[np.argsort(-adjusted[eligible], kind="stable")[: self.k]]
        # FAISS leaves slots empty (id 0) only when it has no more items to give.
        if exhaustive or (ids == 0).any():
            return ids[top], adjusted[top]
        if top.size < self.k:
            return None
        boost = self.rules.max_boost if self.rules is not None else 0.0
        if boost > 0 and adjusted[top[-1]] < scores[-1] + boost:
            return None  # an unfetched item (score <= scores[-1]) could still outrank the k-th
        return ids[top], adjusted[top]


def download(source: str, directory: str | os.PathLike) -> Path:
    """Download an MLflow ``runs:/`` or ``models:/`` bundle into ``directory``; the local path."""
    import mlflow  # imported only here: 1.3 s, and only MLflow sources need it

    Path(directory).mkdir(parents=True, exist_ok=True)
    target = tempfile.mkdtemp(prefix="bundle-", dir=directory)
    store = project_store_uri(mlflow)
    try:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=target, tracking_uri=store, registry_uri=store
        )
    except Exception as exc:  # MLflow raises many types (MlflowException, OSError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"bundle {source}: cannot download from MLflow ({first})") from None
    return Path(path)


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


def project_store_uri(mlflow: Any) -> str | None:
    """Training's default store (``mlflow/mlflow.db`` under the working directory, as in
    ``shopformer.train.tracking``) when no tracking URI is set and that database exists; else None
    (MLflow's own resolution)."""
    utils = getattr(getattr(mlflow.tracking, "_tracking_service", None), "utils", None)
    is_set = getattr(utils, "is_tracking_uri_set", None)  # also sees mlflow.set_tracking_uri()
    explicit = is_set() if callable(is_set) else bool(os.environ.get("MLFLOW_TRACKING_URI"))
    database = Path(PROJECT_STORE)
    return None if explicit or not database.is_file() else f"sqlite:///{database.resolve()}"


def _onnx_session(bundle: BundleFiles, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(
            str(bundle.encoder_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
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


def _session(spec: Mapping[str, Any], i: int) -> Session:
    unknown = sorted(set(spec) - set(Session.__dataclass_fields__))
    if unknown:
        raise RequestError((i, unknown[0]), "unknown field")
    if "items" not in spec:
        raise RequestError((i, "items"), "required")
    return Session(**spec)


def _check_session(s: Session, i: int) -> None:
    if isinstance(s.items, str | bytes) or not isinstance(s.items, Sequence | np.ndarray):
        raise RequestError((i, "items"), "must be a list of raw item ids, oldest first")
    if len(s.items) == 0:
        raise RequestError((i, "items"), "empty history: send at least one item id")
    for name in (EVENT_TYPES, "timestamps"):
        values = getattr(s, name)
        if values is not None and len(values) != len(s.items):
            raise RequestError((i, name), f"has {len(values)} values for {len(s.items)} items")


def _check_k(k: Any, loc: tuple) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise RequestError(loc, f"must be a positive integer, got {k!r}")
