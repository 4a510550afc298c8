"""The canonical event table and its validation.

Every source is normalised to one table with the columns of ``EVENT_COLUMNS``;
whatever is wrong with the input is reported as a single-line
:class:`DataValidationError` that names the file, the column and an example.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shopformer.data.row_errors import DataValidationError as DataValidationError
from shopformer.data.row_errors import column_error, null_mask, shown_names
from shopformer.data.timestamps import MAX_TIMESTAMP as MAX_TIMESTAMP
from shopformer.data.timestamps import TIMESTAMP_UNITS as TIMESTAMP_UNITS
from shopformer.data.timestamps import parse_order
from shopformer.data.timestamps import parse_timestamps as parse_timestamps
from shopformer.errors import DataError

USER_ID = "user_id"
SESSION_ID = "session_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
EVENT_TYPE = "event_type"
# Optional: the order of events within a session, for ties in time (day-only dates). Only ever
# taken when mapped (``data.columns.order=COLUMN``): a file's ``order`` column may be an order id.
ORDER = "order"
EVENT_COLUMNS = (USER_ID, SESSION_ID, ITEM_ID, TIMESTAMP, EVENT_TYPE)
ITEM_COLUMNS = (ITEM_ID, "category", "price", "in_stock")

DEFAULT_EVENT_TYPE = "view"


class DataSourceNotFound(DataError, FileNotFoundError):
    """A dataset file is missing."""


@dataclass
class EventTable:
    """Canonical events plus what was learnt while building them.

    ``has_timestamps`` is False for order-only datasets, whose ``timestamp`` is an
    ordinal rank; features that need real time refuse such data. ``dropped`` counts the rows
    the source left out, by reason (``rows in the file = len(events) + sum(dropped)``).
    ``user_id`` may be missing (null) on rows that have a ``session_id``.
    """

    events: pd.DataFrame
    origin: str
    has_timestamps: bool = True
    items: pd.DataFrame | None = None
    dropped: dict[str, int] = field(default_factory=dict)


def require_columns(df: pd.DataFrame, required: Iterable[str], origin: str, hint: str = "") -> None:
    """Fail when any required column is absent, listing what the file has."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        extra = f" {hint}" if hint else ""
        raise DataValidationError(
            f"{origin}: missing column '{missing[0]}' (file has: {shown_names(df.columns)}).{extra}"
        )


def _check_keys(df: pd.DataFrame, origin: str) -> dict[str, np.ndarray]:
    """Each row needs a user id or a session id; returns the null mask of each key column present."""
    nulls = {c: null_mask(df[c]) for c in (USER_ID, SESSION_ID) if c in df.columns}
    if len(nulls) == 2:
        neither = nulls[USER_ID] & nulls[SESSION_ID]
        if neither.any():
            problem = f"and '{SESSION_ID}' are both empty (each row needs one of them)"
            raise column_error(origin, USER_ID, problem, df[USER_ID], neither, df.attrs)
        return nulls
    (column, null), *_ = nulls.items()
    if null.any():
        hint = (
            " (rows without a user need a session id: map one with data.columns.session_id=COLUMN)"
            if column == USER_ID
            else ""
        )
        raise column_error(origin, column, f"has null ids{hint}", df[column], null, df.attrs)
    return nulls


def normalise_id(values: pd.Series, null: np.ndarray | None = None) -> pd.Series:
    """Integer-like ids become int64 (``Int64`` with gaps); anything else stripped strings (None for gaps)."""
    null = null_mask(values) if null is None else null
    present = values[~null]
    if pd.api.types.is_bool_dtype(values) or not len(present):
        numbers = None
    elif pd.api.types.is_numeric_dtype(values):
        numbers = present
    else:
        numbers = pd.to_numeric(present.astype(str).str.strip(), errors="coerce")
    if numbers is not None and _exact_integers(numbers):
        ints = pd.Series(pd.NA, index=values.index, dtype="Int64")
        ints[~null] = numbers.to_numpy(dtype="int64")
        return ints.astype("int64") if not null.any() else ints
    text = values.astype(str).str.strip().astype(object)
    text[null] = None
    return text


def _exact_integers(numbers: pd.Series) -> bool:
    """Whether every number is a whole number held exactly (so that int64 loses nothing)."""
    if numbers.dtype.kind == "i":
        return True
    if numbers.dtype.kind not in "fu":
        return False
    values = numbers.to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        return bool(
            np.isfinite(values).all()
            and (values == np.floor(values)).all()
            and (np.abs(values) < 2**53).all()
        )


def normalise_event_types(
    raw: pd.Series,
    origin: str,
    mapping: Mapping[str, str] | None = None,
    allowed: Iterable[str] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> pd.Series:
    """Lower-case and map event types; with ``allowed`` fixed, unknown values fail."""
    attrs = raw.attrs if attrs is None else attrs
    null = null_mask(raw)
    if null.any():
        raise column_error(origin, EVENT_TYPE, "has empty event types", raw, null, attrs)
    values = raw.astype(str).str.strip().str.lower()
    if mapping:
        lowered = {str(k).lower(): str(v) for k, v in mapping.items()}
        values = values.map(lambda v: lowered.get(v, v))
    if allowed is not None:
        allowed = list(allowed)
        unknown = ~values.isin(allowed).to_numpy()
        if unknown.any():
            raise column_error(
                origin,
                EVENT_TYPE,
                f"has event types outside the fixed vocabulary {allowed}",
                raw,
                unknown,
                attrs,
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

    Needs ``item_id``, ``timestamp`` and one of ``user_id`` / ``session_id`` on every row (with
    both columns, a row may lack either one); ``event_type`` defaults to ``view``; ``order``
    (optional) breaks ties in time. Raises :class:`DataValidationError`.
    """
    if df.empty:
        raise DataValidationError(f"{origin}: no rows")
    require_columns(df, [ITEM_ID, TIMESTAMP], origin)
    if USER_ID not in df.columns and SESSION_ID not in df.columns:
        raise DataValidationError(
            f"{origin}: missing column '{USER_ID}' (or '{SESSION_ID}'); one of them is needed "
            f"(file has: {shown_names(df.columns)})"
        )
    attrs = df.attrs
    out = pd.DataFrame(index=df.index)
    for column, null in _check_keys(df, origin).items():
        out[column] = normalise_id(df[column], null)
    item_null = null_mask(df[ITEM_ID])
    if item_null.any():
        raise column_error(origin, ITEM_ID, "has null ids", df[ITEM_ID], item_null, attrs)
    out[ITEM_ID] = normalise_id(df[ITEM_ID], item_null)
    if has_timestamps:
        out[TIMESTAMP] = parse_timestamps(df[TIMESTAMP], origin, timestamp_unit, attrs)
    else:
        out[TIMESTAMP] = parse_order(df[TIMESTAMP], origin, TIMESTAMP, attrs)
    if EVENT_TYPE in df.columns:
        out[EVENT_TYPE] = normalise_event_types(df[EVENT_TYPE], origin, event_map, event_vocabulary, attrs)
    else:
        if event_vocabulary is not None and DEFAULT_EVENT_TYPE not in list(event_vocabulary):
            raise DataValidationError(
                f"{origin}: no '{EVENT_TYPE}' column and the default '{DEFAULT_EVENT_TYPE}' is "
                f"not in the fixed vocabulary {list(event_vocabulary)}"
            )
        out[EVENT_TYPE] = DEFAULT_EVENT_TYPE
    if ORDER in df.columns:
        out[ORDER] = parse_order(df[ORDER], origin, ORDER, attrs)
    return out.reset_index(drop=True)


def validate_items(df: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check the optional item table (``item_id`` plus category / price / in_stock)."""
    require_columns(df, [ITEM_ID], origin)
    null = null_mask(df[ITEM_ID])
    if null.any():
        raise column_error(origin, ITEM_ID, "has null ids", df[ITEM_ID], null, df.attrs)
    out = df.copy()
    out[ITEM_ID] = normalise_id(df[ITEM_ID], null)
    dup = out[ITEM_ID].duplicated().to_numpy()
    if dup.any():
        raise column_error(origin, ITEM_ID, "repeats item ids", df[ITEM_ID], dup, df.attrs)
    if "price" in out.columns:
        present = ~null_mask(df["price"])
        price = pd.to_numeric(df["price"].where(present), errors="coerce")
        bad = present & (price.isna() | ~np.isfinite(price.astype("float64")) | (price < 0)).to_numpy()
        if bad.any():
            raise column_error(origin, "price", "has invalid prices", df["price"], bad, df.attrs)
        out["price"] = price.astype("float64")
    if "in_stock" in out.columns:
        out["in_stock"] = _parse_bool(df, "in_stock", origin)
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
        raise column_error(origin, column, "has values that are not true/false", df[column], bad, df.attrs)
    return parsed.astype(bool)
