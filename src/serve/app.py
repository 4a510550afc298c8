"""The HTTP API (FastAPI): recommend, batch, similar items, journey scores, health, metadata, metrics, reload.

Every bad request is answered 4xx with ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``
naming the field; anything unexpected is logged and answered 500 as JSON with an error id (no
exception text, no traceback); a body over ``max_body_bytes`` is 413 before it is parsed. No CORS
headers are sent: a browser page of another origin cannot call the service. ``POST /recommend`` goes
through a dynamic batcher (concurrent sessions share one encoder run and one index search; see
:mod:`shopformer.serve.micro_batching`; ``batching="off"`` answers each alone). The other endpoints are
plain ``def`` functions, which FastAPI runs in its thread pool (onnxruntime and FAISS release the GIL).

``POST /admin/reload`` loads the new bundle completely, then swaps one reference: requests already
running finish on the model they started with. It needs ``Authorization: Bearer <token>`` with the
token from ``SHOPFORMER_ADMIN_TOKEN`` (read when the app is created); without a token it is off (403).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from shopformer import __version__
from shopformer.errors import RequestError
from shopformer.serve.bundle import BundleError
from shopformer.serve.exploration import Ask, Shown, answer_asks
from shopformer.serve.journey import JourneyScore, NoJourneyModel
from shopformer.serve.limits import MAX_BODY_BYTES, BodyLimitMiddleware
from shopformer.serve.micro_batching import MAX_WAIT_MS, SETTINGS, LoopBatcher, ThreadBatcher, make_batcher
from shopformer.serve.model_slot import ModelSlot
from shopformer.serve.policies import PolicyConfig
from shopformer.serve.prometheus import MetricsMiddleware, ServingMetrics
from shopformer.serve.recommender import Recommendation, Recommender
from shopformer.serve.schemas import (
    FeedbackIn,
    FeedbackOut,
    JourneyBatchIn,
    JourneyBatchOut,
    JourneyIn,
    JourneyOut,
    RecommendBatchIn,
    RecommendBatchOut,
    RecommendIn,
    RecommendOut,
    ReloadIn,
    SimilarIn,
    error_responses,
)
from shopformer.serve.serving_logs import ServingLogs
from shopformer.serve.shared_reload import SharedSource, follow
from shopformer.serve.traffic_split import TrafficSplit

ADMIN_TOKEN_ENV = "SHOPFORMER_ADMIN_TOKEN"
log = logging.getLogger("shopformer.serve")
# What each route can answer besides 200, as the OpenAPI spec documents it.
REQUEST_ERRORS = error_responses(422)
JOURNEY_ERRORS = error_responses(404, 422)
SERVICE_ERRORS = error_responses()
ADMIN_ERRORS = error_responses(401, 403, 409, 422)
FEEDBACK_ERRORS = error_responses(404, 422)


def create_app(
    recommender_or_source: Recommender | str | os.PathLike,
    *,
    admin_token: str | None = None,
    threads: int = 1,
    faiss_threads: int = 1,
    cache_dir: str | os.PathLike | None = None,
    batching: str = "loop",
    max_batch: int = 64,
    max_wait_ms: float = MAX_WAIT_MS,
    max_body_bytes: int = MAX_BODY_BYTES,
    shared_reload: str | os.PathLike | None = None,
    follow_interval: float = 1.0,
    policy: PolicyConfig | Mapping[str, Any] | None = None,
    log_dir: str | os.PathLike | None = None,
    log_flush_interval: float = 1.0,
    log_writer: str = "thread",
    ab_bundle: Recommender | str | os.PathLike | None = None,
    ab_split: str = "50/50",
    ab_arms: tuple[str, str] = ("A", "B"),
) -> FastAPI:
    """The app serving a :class:`Recommender` or the bundle at a source (directory or MLflow URI).

    ``admin_token`` defaults to ``$SHOPFORMER_ADMIN_TOKEN``; empty or unset disables reload.
    The thread and cache options also apply to bundles loaded by reload. ``batching`` (``loop``,
    ``thread`` or ``off``) answers concurrent ``/recommend`` requests together, up to ``max_batch``
    sessions per encoder run; while busy, a batch waits up to ``max_wait_ms`` for company (see
    :class:`~shopformer.serve.micro_batching.Pacer`). ``shared_reload``: a file through which the
    worker processes of one service follow each other's reloads (checked every ``follow_interval``
    seconds). A request body over ``max_body_bytes`` is answered 413 before it is parsed.
    ``policy``: the exploration policy of every answer (:class:`PolicyConfig` or its fields; greedy by
    default), which a request may override. ``log_dir``: where impressions and feedback are logged
    (off when unset; see :mod:`shopformer.serve.serving_logs`); a clean shutdown writes every row.
    ``log_writer``: ``thread`` writes the log files in this process, ``process`` in a child process
    (the console script's default: the files' work then takes nothing from the requests' thread).
    ``ab_bundle``: a second bundle served beside the first as an A/B test, each visitor (user id, else
    session id) always on the same arm (:mod:`shopformer.serve.traffic_split`), ``ab_split`` of traffic
    each (e.g. ``"50/50"``); the arm is in every answer and impression row. Reload replaces arm A.
    """
    if batching not in SETTINGS:
        raise ValueError(f"batching must be one of {SETTINGS}, got {batching!r}")
    options = {"threads": threads, "faiss_threads": faiss_threads, "cache_dir": cache_dir}
    recommender = recommender_or_source
    if not isinstance(recommender, Recommender):
        recommender = Recommender.load(recommender, **options)
    token = os.environ.get(ADMIN_TOKEN_ENV, "") if admin_token is None else admin_token
    if isinstance(policy, Mapping):
        policy = PolicyConfig(**policy)
    if policy is not None and policy.name == "softmax":
        from shopformer.serve import propensity_kernel  # numba: imported only where softmax serves

        propensity_kernel.warm_up()  # compiled (or loaded from numba's cache) before any request waits
    logs = ServingLogs(log_dir, flush_interval=log_flush_interval, writer=log_writer) if log_dir else None
    challenger, split = None, None
    if ab_bundle is not None:
        split = TrafficSplit.of(ab_arms, ab_split)
        challenger = (
            ab_bundle if isinstance(ab_bundle, Recommender) else Recommender.load(ab_bundle, **options)
        )
    slot, metrics = ModelSlot(recommender, options, policy, logs, challenger, split), ServingMetrics()
    metrics.serving(recommender.name, recommender.version)

    shared = SharedSource(shared_reload) if shared_reload else None

    def follow_reload(source: str) -> None:
        _swap(slot, metrics, Recommender.load(source, **slot.load_options))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(follow(shared, follow_reload, follow_interval)) if shared else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            if logs is not None:
                logs.close()  # SIGTERM: uvicorn shuts the app down, every queued row is written

    app = FastAPI(
        title="shopformer",
        version=__version__,
        description="Session-based recommendations from an exported shopformer bundle.",
        lifespan=lifespan,
    )
    app.state.slot, app.state.metrics = slot, metrics
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts the 413s too
    _add_error_handlers(app)
    batcher = None
    if batching != "off":
        batcher = make_batcher(
            batching, answer_asks, max_batch, metrics.batch_size.observe, max_wait_ms / 1e3
        )
    _add_model_routes(app, slot, metrics, batcher)
    _add_admin_routes(app, slot, metrics, token, shared)
    return app


def _add_model_routes(
    app: FastAPI, slot: ModelSlot, metrics: ServingMetrics, batcher: LoopBatcher | ThreadBatcher | None
) -> None:
    _add_recommend_routes(app, slot, metrics, batcher)
    _add_other_routes(app, slot, metrics)


def _add_recommend_routes(
    app: FastAPI, slot: ModelSlot, metrics: ServingMetrics, batcher: LoopBatcher | ThreadBatcher | None
) -> None:
    if batcher is None:

        @app.post("/recommend", response_model=RecommendOut, tags=["recommend"], responses=REQUEST_ERRORS)
        def recommend(body: RecommendIn) -> Response:
            """Top-k items for one session's history (through the exploration policy, when one is set)."""
            try:
                ((result, rec, arm),) = slot.answer([_asked(slot, body, ())])
            except RequestError as exc:
                raise _unprocessable(RequestError(exc.loc[1:], exc.message), ()) from None
            metrics.unknown_items.inc(len(result.unknown_items))
            return JSONResponse(_result(result, rec, arm))

    else:

        @app.post("/recommend", response_model=RecommendOut, tags=["recommend"], responses=REQUEST_ERRORS)
        async def recommend(body: RecommendIn) -> Response:
            """Top-k items for one session's history (through the exploration policy, when one is set)."""
            ask = _asked(slot, body, ())
            rec, arm = slot.route(ask)  # one model for the whole request, even across a reload
            try:
                result = await batcher.submit(rec, ask)
            except RequestError as exc:
                raise _unprocessable(exc, ()) from None
            slot.log(rec, [ask], [result], arm)
            metrics.unknown_items.inc(len(result.unknown_items))
            return JSONResponse(_result(result, rec, arm))

    @app.post(
        "/recommend/batch", response_model=RecommendBatchOut, tags=["recommend"], responses=REQUEST_ERRORS
    )
    def recommend_batch(body: RecommendBatchIn) -> Response:
        """Many sessions at once: one encoder run and one index search for all of them."""
        asks = [_asked(slot, request, ("requests", i), i) for i, request in enumerate(body.requests)]
        try:
            answered = slot.answer(asks)
        except RequestError as exc:
            raise _unprocessable(exc, ("requests",)) from None
        metrics.unknown_items.inc(sum(len(shown.unknown_items) for shown, _, _ in answered))
        return JSONResponse({"results": [_result(shown, rec, arm) for shown, rec, arm in answered]})

    @app.post("/feedback", response_model=FeedbackOut, tags=["recommend"], responses=FEEDBACK_ERRORS)
    def feedback(body: FeedbackIn) -> dict[str, Any]:
        """Log a click, cart or purchase on an item an answer showed (needs the server's log_dir)."""
        if slot.logs is None:
            raise HTTPException(404, "feedback logging is off: start the server with log_dir=DIR")
        match = slot.logs.record_feedback(body.request_id, body.item_id, body.event, body.revenue)
        return {"logged": True, "match": match}


def _add_other_routes(app: FastAPI, slot: ModelSlot, metrics: ServingMetrics) -> None:
    @app.post("/similar", response_model=RecommendOut, tags=["recommend"], responses=REQUEST_ERRORS)
    def similar(body: SimilarIn) -> Response:
        """Items closest to one item (item-to-item), the item itself excluded."""
        rec = slot.current
        filters = body.filters.as_filters() if body.filters else None
        try:
            result = rec.similar(body.item_id, k=body.k, filters=filters)
        except RequestError as exc:
            raise _unprocessable(exc, ()) from None
        metrics.unknown_items.inc(len(result.unknown_items))
        return JSONResponse(_result(result, rec))

    @app.post("/journey", response_model=JourneyOut, tags=["journey"], responses=JOURNEY_ERRORS)
    def journey(body: JourneyIn) -> Response:
        """Next-event-type, conversion and cart-abandonment probabilities after a session's last event."""
        rec = slot.current
        (result,) = _journeys(rec, [body], prefix=())
        metrics.unknown_items.inc(len(result.unknown_items))
        return JSONResponse(_journey_result(result, rec))

    @app.post("/journey/batch", response_model=JourneyBatchOut, tags=["journey"], responses=JOURNEY_ERRORS)
    def journey_batch(body: JourneyBatchIn) -> Response:
        """Many sessions at once: one ONNX run for all of them."""
        rec = slot.current
        results = _journeys(rec, body.sessions, prefix=("sessions",))
        metrics.unknown_items.inc(sum(len(r.unknown_items) for r in results))
        return JSONResponse({"results": [_journey_result(r, rec) for r in results]})

    @app.get("/health", tags=["service"], responses=SERVICE_ERRORS)
    def health() -> dict[str, Any]:
        rec = slot.current
        return {"status": "ok", "model": _model(rec), "n_items": rec.n_items}

    @app.get("/metadata", tags=["service"], responses=SERVICE_ERRORS)
    def metadata() -> dict[str, Any]:
        """The bundle's manifest (model, metrics, index, file hashes), its source and attributes."""
        return slot.current.metadata()

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse, responses=SERVICE_ERRORS)
    def prometheus() -> Response:
        """Prometheus text format: requests by endpoint and status, latencies, batch sizes, reloads."""
        return Response(metrics.render(), media_type=metrics.content_type)


def _add_admin_routes(
    app: FastAPI, slot: ModelSlot, metrics: ServingMetrics, token: str, shared: SharedSource | None
) -> None:
    def require_admin(authorization: str | None = Header(None)) -> None:
        if not token:
            raise HTTPException(403, f"admin endpoints are disabled: set {ADMIN_TOKEN_ENV} to enable them")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(401, "missing or wrong admin token", headers={"WWW-Authenticate": "Bearer"})

    @app.post("/admin/reload", dependencies=[Depends(require_admin)], tags=["admin"], responses=ADMIN_ERRORS)
    def reload(body: ReloadIn) -> dict[str, Any]:
        """Load another bundle completely, then swap it in; running requests finish on the old one."""
        if not slot.reloading.acquire(blocking=False):
            raise HTTPException(409, "another reload is in progress")
        try:
            new = Recommender.load(body.source, **slot.load_options)
        except BundleError as exc:
            metrics.reloads.labels(result="refused").inc()
            log.warning("reload refused: %s", exc)
            raise _unprocessable(RequestError("source", str(exc)), ()) from None
        finally:
            slot.reloading.release()
        previous = _swap(slot, metrics, new)
        if shared is not None:
            shared.publish(body.source)  # the other worker processes follow within a second or so
        return {"model": _model(new), "previous": _model(previous), "source": new.source}


def _swap(slot: ModelSlot, metrics: ServingMetrics, new: Recommender) -> Recommender:
    """Serve ``new`` from now on (one reference assignment); the recommender it replaces."""
    previous, slot.current = slot.current, new
    metrics.reloads.labels(result="ok").inc()
    metrics.serving(new.name, new.version)
    log.info("serving %s %s from %s", new.name, new.version, new.source)
    return previous


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the whole input back; a 1000-item batch is not worth repeating.
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The client gets an id to quote, never the exception or its traceback (those are logged).
        error_id = uuid.uuid4().hex[:16]
        log.exception("unexpected error %s on %s %s", error_id, request.method, request.url.path)
        detail = f"internal error {error_id}; it has been logged"
        return JSONResponse({"detail": detail, "error_id": error_id}, status_code=500)


def _asked(slot: ModelSlot, body: RecommendIn, prefix: tuple, i: int = 0) -> Ask:
    """The request as an :class:`Ask`; a bad policy override is a 422 naming its field."""
    try:
        return slot.ask(body, i)
    except RequestError as exc:
        raise _unprocessable(exc, prefix) from None


def _journeys(rec: Recommender, bodies: list[JourneyIn], prefix: tuple) -> list[JourneyScore]:
    try:
        return rec.journey_batch([b.as_session() for b in bodies])
    except NoJourneyModel as exc:
        raise HTTPException(404, exc.message) from None
    except RequestError as exc:
        loc = exc.loc if prefix else exc.loc[1:]
        raise _unprocessable(RequestError(loc, exc.message), prefix) from None


def _journey_result(result: JourneyScore, rec: Recommender) -> dict[str, Any]:
    return {
        "next_event_probs": result.event_probs,
        "next_event_type": result.next_event_type,
        "conversion": result.conversion,
        "abandonment": result.abandonment,
        "cart_open": result.cart_open,
        "unknown_items": result.unknown_items,
        "model": _model(rec),
    }


def _unprocessable(exc: RequestError, prefix: tuple) -> HTTPException:
    detail = [{"loc": ["body", *prefix, *exc.loc], "msg": exc.message, "type": "value_error"}]
    return HTTPException(422, detail)


def _result(result: Recommendation | Shown, rec: Recommender, arm: str | None = None) -> dict[str, Any]:
    if isinstance(result, Recommendation):  # similar items: no policy
        items = [{"item_id": item, "score": score} for item, score in result.items]
        return {"items": items, "unknown_items": result.unknown_items, "model": _model(rec)}
    return {
        "items": [{"item_id": i, "score": s, "propensity": p} for i, s, p in result.items],
        "unknown_items": result.unknown_items,
        "model": _model(rec),
        "request_id": result.request_id,
        "policy": {"name": result.policy, "version": result.policy_version},
        "slate_propensity": result.slate_propensity,
        "arm": arm,
    }


def _model(rec: Recommender) -> dict[str, str]:
    return {"name": rec.name, "version": rec.version}
