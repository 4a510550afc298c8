"""Request and response bodies of the HTTP API, with the limits every request is held to."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

MAX_HISTORY = 1000  # items per session (the encoder keeps the most recent max_len of them)
MAX_K = 1000
MAX_BATCH = 1024
MAX_LIST = 10_000  # entries of a filter list or boost map
MAX_NAME = 256  # characters of a raw id, category or event type

RawId = StrictInt | Annotated[StrictStr, Field(min_length=1, max_length=MAX_NAME)]
Name = Annotated[StrictStr, Field(max_length=MAX_NAME)]
Number = Annotated[StrictFloat, Field(allow_inf_nan=False)]  # ints too; not booleans or strings


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FiltersIn(_Body):
    """Business rules (see ``shopformer.serve.rules``); boosts add to the score."""

    in_stock: StrictBool | None = Field(None, description="true: only items whose in_stock is true")
    categories: list[Name | StrictInt] | None = Field(None, max_length=MAX_LIST, description="only these")
    exclude_categories: list[Name | StrictInt] | None = Field(None, max_length=MAX_LIST)
    min_price: Number | None = Field(None, description="inclusive; items without a price are excluded")
    max_price: Number | None = None
    exclude_items: list[RawId] | None = Field(None, max_length=MAX_LIST, description="raw ids never returned")
    boosts: dict[Name, Number] | None = Field(
        None, max_length=MAX_LIST, description="boolean item attribute -> added to the score when true"
    )
    boost_items: dict[Name, Number] | None = Field(
        None, max_length=MAX_LIST, description="raw item id -> added to its score"
    )

    def as_filters(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class PolicyIn(_Body):
    """Override the server's exploration policy for this request (unset fields keep the server's)."""

    name: Literal["greedy", "epsilon_greedy", "softmax", "thompson"] | None = None
    epsilon: Annotated[Number, Field(ge=0, le=1)] | None = None
    temperature: Annotated[Number, Field(gt=0)] | None = None
    top_n: StrictInt | None = Field(None, ge=1, le=MAX_K, description="candidates the policy draws from")

    def as_overrides(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


RequestId = Annotated[StrictStr, Field(min_length=1, max_length=MAX_NAME, pattern=r"^[\x21-\x7e]+$")]


class RecommendIn(_Body):
    """One session; event_types / timestamps, when given, have one entry per item."""

    items: list[RawId] = Field(
        min_length=1, max_length=MAX_HISTORY, description="raw item ids of the session, oldest first"
    )
    event_types: list[Name] | None = Field(
        None, max_length=MAX_HISTORY, description="one event type name per item (default: view)"
    )
    timestamps: list[StrictInt] | None = Field(
        None, max_length=MAX_HISTORY, description="unix seconds per item (needed if the model uses time gaps)"
    )
    k: StrictInt = Field(10, ge=1, le=MAX_K)
    exclude_seen: StrictBool = True
    filters: FiltersIn | None = None
    request_id: RequestId | None = Field(
        None, description="seeds the policy's draws (same id, same answer); the server makes one when unset"
    )
    policy: PolicyIn | None = None
    user_id: RawId | None = Field(None, description="A/B tests: the visitor; always the same arm for it")
    session_id: RawId | None = Field(None, description="A/B tests: the unit when there is no user_id")

    def unit(self) -> Any:
        """Who an A/B split assigns: the user, else the session (None: the request alone)."""
        return self.user_id if self.user_id is not None else self.session_id

    def as_session(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "event_types": self.event_types,
            "timestamps": self.timestamps,
            "k": self.k,
            "exclude_seen": self.exclude_seen,
            "filters": self.filters.as_filters() if self.filters else None,
        }


class RecommendBatchIn(_Body):
    requests: list[RecommendIn] = Field(min_length=1, max_length=MAX_BATCH)


class SimilarIn(_Body):
    item_id: RawId
    k: StrictInt = Field(10, ge=1, le=MAX_K)
    filters: FiltersIn | None = None


class ReloadIn(_Body):
    source: Annotated[StrictStr, Field(min_length=1, max_length=4096)] = Field(
        description="bundle directory, runs:/<run_id>/<path> or models:/<name>/<version|@alias>"
    )


class ItemScore(BaseModel):
    item_id: int | str
    score: float
    propensity: float | None = Field(
        None, description="probability that the policy shows this item at this position (exploring answers)"
    )


class ModelRef(BaseModel):
    name: str
    version: str


class PolicyRef(BaseModel):
    name: str
    version: str


class RecommendOut(BaseModel):
    items: list[ItemScore]
    unknown_items: list[int | str]
    model: ModelRef
    request_id: str | None = None
    policy: PolicyRef | None = None
    slate_propensity: float | None = Field(None, description="probability of this whole ranked list")
    arm: str | None = Field(None, description="the A/B arm that answered (null outside an A/B test)")


class FeedbackIn(_Body):
    """A user event on an item a recommendation showed."""

    request_id: RequestId
    item_id: RawId
    event: Literal["click", "cart", "purchase"]
    revenue: Annotated[Number, Field(ge=0)] = 0.0


class FeedbackOut(BaseModel):
    logged: bool
    match: Literal["matched", "unknown_request", "item_not_shown"] | None = Field(
        description="whether the request id and item were among this server's recent answers"
    )


class RecommendBatchOut(BaseModel):
    results: list[RecommendOut]


class JourneyIn(_Body):
    """One session, oldest event first; event_types / timestamps, when given, have one entry per item."""

    items: list[RawId] = Field(
        min_length=1, max_length=MAX_HISTORY, description="raw item ids of the session, oldest first"
    )
    event_types: list[Name] | None = Field(
        None, max_length=MAX_HISTORY, description="one event type name per item (default: view)"
    )
    timestamps: list[StrictInt] | None = Field(
        None, max_length=MAX_HISTORY, description="unix seconds per item, oldest first (needed for time gaps)"
    )

    def as_session(self) -> dict[str, Any]:
        return {"items": self.items, "event_types": self.event_types, "timestamps": self.timestamps}


class JourneyBatchIn(_Body):
    sessions: list[JourneyIn] = Field(min_length=1, max_length=MAX_BATCH)


class JourneyOut(BaseModel):
    next_event_probs: dict[str, float] | None = Field(
        description="probability of each event type being the session's next event (sums to 1)"
    )
    next_event_type: str | None
    conversion: float | None = Field(description="probability that a purchase follows in this session")
    abandonment: float | None = Field(
        description="probability that the open cart ends without a purchase; null without an open cart"
    )
    cart_open: bool
    unknown_items: list[int | str]
    model: ModelRef


class JourneyBatchOut(BaseModel):
    results: list[JourneyOut]


class FieldError(BaseModel):
    loc: list[int | str]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """A refused request: a message, or one entry per bad field (422)."""

    detail: str | list[FieldError]


class InternalErrorOut(BaseModel):
    """An unexpected failure: an id to quote; the details are in the service's log, never here."""

    detail: str
    error_id: str


def error_responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` for the error codes a route can answer (plus 400, 413 and 500, which any can)."""
    described = {
        400: "the body is not JSON",
        401: "missing or wrong admin token",
        403: "admin endpoints are disabled (no admin token set)",
        404: "the bundle has no model for this endpoint",
        409: "another reload is in progress",
        413: "the request body is over max_body_bytes",
        422: "a field is missing, malformed or names something the model does not know",
    }
    responses: dict[int | str, dict] = {
        code: {"model": ErrorOut, "description": described[code]} for code in sorted({400, 413, *codes})
    }
    responses[500] = {"model": InternalErrorOut, "description": "unexpected error (logged with its id)"}
    return responses
