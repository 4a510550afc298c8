"""The canonical event table and its validation.

Every source is normalised to one table with the columns of ``EVENT_COLUMNS``;
whatever is wrong with the input is reported as a single-line
:class:`DataValidationError` that names the file, the column and an example.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from shopformer.errors import DataError

USER_ID = "user_id"
SESSION_ID = "session_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
EVENT_TYPE = "event_type"
EVENT_COLUMNS = (USER_ID, SESSION_ID, ITEM_ID, TIMESTAMP, EVENT_TYPE)
ITEM_COLUMNS = (ITEM_ID, "category", "price", "in_stock")

DEFAULT_EVENT_TYPE = "view"
# 1970-01-01 .. 2100-01-01: anything outside is a unit mistake (ms given as s) or garbage.
MAX_TIMESTAMP = 4_102_444_800
TIMESTAMP_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


class DataValidationError(DataError):
    """Input rows violate the canonical event schema."""


class DataSourceNotFound(DataError, FileNotFoundError):
    """A dataset file is missing."""


@dataclass
class EventTable:
    """Canonical events plus what was learnt while building them.

    ``has_timestamps`` is False for order-only datasets, whose ``timestamp`` is an
    ordinal rank; features that need real time refuse such data.
    """

    events: pd.DataFrame
    origin: str
    has_timestamps: bool = True
    items: pd.DataFrame | None = None
    dropped: dict[str, int] = field(default_factory=dict)


def _example(df: pd.DataFrame, mask: np.ndarray | pd.Series, column: str) -> str:
    """Describe the first offending row: its 1-based data row number and value."""
    positions = np.flatnonzero(np.asarray(mask))
    row = int(positions[0])
    value = df[column].iloc[row]
    line = df.attrs.get("row_offset", 1) + row
    word = df.attrs.get("row_word", "row")
    return f"{positions.size:,} bad row(s), first at {word} {line}: {column}={value!r}"


def _fail(origin: str, column: str, problem: str, detail: str) -> DataValidationError:
    return DataValidationError(f"{origin}: column '{column}' {problem}; {detail}")


def require_columns(df: pd.DataFrame, required: Iterable[str], origin: str, hint: str = "") -> None:
    """Fail when any required column is absent, listing what the file has."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        have = ", ".join(map(str, df.columns)) or "(none)"
        extra = f" {hint}" if hint else ""
        raise DataValidationError(f"{origin}: missing column '{missing[0]}' (file has: {have}).{extra}")


def _check_ids(df: pd.DataFrame, column: str, origin: str) -> None:
    nulls = df[column].isna().to_numpy()
    if not pd.api.types.is_numeric_dtype(df[column]):
        nulls = nulls | df[column].astype(str).str.strip().eq("").to_numpy()
    if nulls.any():
        raise _fail(origin, column, "has null ids", _example(df, nulls, column))


def parse_timestamps(raw: pd.Series, origin: str, unit: str = "s") -> pd.Series:
    """Return int64 unix seconds from numbers (in ``unit``) or datetime strings."""
    if unit not in TIMESTAMP_UNITS:
        raise DataValidationError(
            f"{origin}: timestamp_unit must be one of {sorted(TIMESTAMP_UNITS)}, got {unit!r}"
        )
    frame = raw.to_frame(TIMESTAMP)
    frame.attrs = raw.attrs
    null = raw.isna().to_numpy()
    if null.any():
        raise _fail(origin, TIMESTAMP, "has empty timestamps", _example(frame, null, TIMESTAMP))
    if pd.api.types.is_datetime64_any_dtype(raw):
        seconds = _datetimes_to_seconds(raw)
    elif pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        seconds = np.floor(raw.to_numpy(dtype="float64") / TIMESTAMP_UNITS[unit])
        seconds = pd.Series(seconds, index=raw.index)
    else:
        text = raw.astype(str).str.strip()
        numeric = pd.to_numeric(text, errors="coerce")
        if numeric.notna().any():
            # A numeric column with some garbage: the non-numeric values are the bad ones.
            bad = numeric.isna().to_numpy()
            if bad.any():
                raise _fail(origin, TIMESTAMP, "has unparseable timestamps", _example(frame, bad, TIMESTAMP))
            return parse_timestamps(numeric.rename(raw.name).pipe(_with_attrs, raw), origin, unit)
        parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
        bad = parsed.isna().to_numpy()
        if bad.any():
            raise _fail(origin, TIMESTAMP, "has unparseable timestamps", _example(frame, bad, TIMESTAMP))
        seconds = _datetimes_to_seconds(parsed)
    out_of_range = ((seconds < 0) | (seconds > MAX_TIMESTAMP)).to_numpy()
    if out_of_range.any():
        raise _fail(
            origin,
            TIMESTAMP,
            f"has times outside 1970..2100 (is timestamp_unit={unit!r} right?)",
            _example(frame, out_of_range, TIMESTAMP),
        )
    return seconds.astype("int64")


def _with_attrs(series: pd.Series, like: pd.Series) -> pd.Series:
    series.attrs = like.attrs
    return series


def _datetimes_to_seconds(values: pd.Series) -> pd.Series:
    if values.dt.tz is None:
        values = values.dt.tz_localize("UTC")
    ns = values.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").astype("int64")
    return pd.Series(ns // 1_000_000_000, index=values.index)


def normalise_event_types(
    raw: pd.Series,
    origin: str,
    mapping: Mapping[str, str] | None = None,
    allowed: Iterable[str] | None = None,
) -> pd.Series:
    """Lower-case and map event types; with ``allowed`` fixed, unknown values fail."""
    frame = raw.to_frame(EVENT_TYPE)
    frame.attrs = raw.attrs
    null = raw.isna().to_numpy()
    if null.any():
        raise _fail(origin, EVENT_TYPE, "has empty event types", _example(frame, null, EVENT_TYPE))
    values = raw.astype(str).str.strip().str.lower()
    if mapping:
        lowered = {str(k).lower(): str(v) for k, v in mapping.items()}
        values = values.map(lambda v: lowered.get(v, v))
    if allowed is not None:
        allowed = list(allowed)
        unknown = ~values.isin(allowed).to_numpy()
        if unknown.any():
            raise _fail(
                origin,
                EVENT_TYPE,
                f"has event types outside the fixed vocabulary {allowed}",
                _example(frame, unknown, EVENT_TYPE),
            )
    return values.astype(object)


def validate_events(
    df: pd.DataFrame,
    origin: str,
    *,
    timestamp_unit: str = "s",
    event_map: Mapping[str, str] | None = None,
    event_vocabulary: Iterable[str] | None = None,
    has_timestamps: bool = True,
) -> pd.DataFrame:
    """Check a renamed raw table and return it in canonical form.

    Needs ``item_id``, ``timestamp`` and one of ``user_id`` / ``session_id``;
    ``event_type`` defaults to ``view``. Raises :class:`DataValidationError`.
    """
    if df.empty:
        raise DataValidationError(f"{origin}: no rows")
    require_columns(df, [ITEM_ID, TIMESTAMP], origin)
    if USER_ID not in df.columns and SESSION_ID not in df.columns:
        raise DataValidationError(
            f"{origin}: missing column '{USER_ID}' (or '{SESSION_ID}'); one of them is needed "
            f"(file has: {', '.join(map(str, df.columns))})"
        )
    out = pd.DataFrame(index=df.index)
    for column in (USER_ID, SESSION_ID, ITEM_ID):
        if column in df.columns:
            _check_ids(df, column, origin)
            out[column] = _normalise_id(df[column])
    ts = df[TIMESTAMP]
    ts.attrs = df.attrs
    out[TIMESTAMP] = parse_timestamps(ts, origin, timestamp_unit) if has_timestamps else ts
    if EVENT_TYPE in df.columns:
        et = df[EVENT_TYPE]
        et.attrs = df.attrs
        out[EVENT_TYPE] = normalise_event_types(et, origin, event_map, event_vocabulary)
    else:
        if event_vocabulary is not None and DEFAULT_EVENT_TYPE not in list(event_vocabulary):
            raise DataValidationError(
                f"{origin}: no '{EVENT_TYPE}' column and the default '{DEFAULT_EVENT_TYPE}' is "
                f"not in the fixed vocabulary {list(event_vocabulary)}"
            )
        out[EVENT_TYPE] = DEFAULT_EVENT_TYPE
    return out.reset_index(drop=True)


def _normalise_id(values: pd.Series) -> pd.Series:
    """Integer-like ids become int64; anything else becomes stripped strings."""
    if pd.api.types.is_integer_dtype(values):
        return values.astype("int64")
    if pd.api.types.is_float_dtype(values):
        as_int = values.astype("int64")
        if (as_int == values).all():
            return as_int
    return values.astype(str).str.strip().astype(object)


def validate_items(df: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check the optional item table (``item_id`` plus category / price / in_stock)."""
    require_columns(df, [ITEM_ID], origin)
    _check_ids(df, ITEM_ID, origin)
    out = df.copy()
    out[ITEM_ID] = _normalise_id(df[ITEM_ID])
    dup = out[ITEM_ID].duplicated().to_numpy()
    if dup.any():
        raise _fail(origin, ITEM_ID, "repeats item ids", _example(out, dup, ITEM_ID))
    if "price" in out.columns:
        price = pd.to_numeric(out["price"], errors="coerce")
        bad = (out["price"].notna() & (price.isna() | (price < 0))).to_numpy()
        if bad.any():
            raise _fail(origin, "price", "has invalid prices", _example(out, bad, "price"))
        out["price"] = price.astype("float64")
    if "in_stock" in out.columns:
        out["in_stock"] = _parse_bool(out, "in_stock", origin)
    if "category" in out.columns:
        out["category"] = out["category"].astype(str)
    return out.reset_index(drop=True)


def _parse_bool(df: pd.DataFrame, column: str, origin: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(df[column]):
        return df[column]
    text = df[column].astype(str).str.strip().str.lower()
    truth = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    parsed = text.map(truth)
    bad = parsed.isna().to_numpy()
    if bad.any():
        raise _fail(origin, column, "has values that are not true/false", _example(df, bad, column))
    return parsed.astype(bool)
