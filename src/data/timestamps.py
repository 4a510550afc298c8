"""Timestamps to unix seconds: numbers in a given (or sniffed) unit, date-time or day-only strings.

Also the order-only columns (an ordinal rank, or the in-session order that breaks ties between
events of the same day). Every failure is one line naming the file, the column and a row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from shopformer.data.row_errors import DataValidationError, column_error, is_text, null_mask

# 1970-01-01 .. 2100-01-01: anything outside is a unit mistake (ms given as s) or garbage.
MAX_TIMESTAMP = 4_102_444_800
TIMESTAMP_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
AUTO = "auto"
# The longest date-time text worth parsing ("2024-01-01T00:00:00.000000000+00:00" is 35).
MAX_DATETIME_CHARS = 64


def sniff_unit(values: np.ndarray) -> str:
    """The smallest unit that puts the median magnitude inside 1970..2100 (``ns`` when none does).

    Unix seconds of real logs are below 4.2e9 and milliseconds above 1e12 (any date after 2001),
    so the median tells them apart; a few stray values cannot tip it.
    """
    finite = np.abs(values[np.isfinite(values)])
    median = float(np.median(finite)) if finite.size else 0.0
    for unit, scale in TIMESTAMP_UNITS.items():
        if median / scale <= MAX_TIMESTAMP:
            return unit
    return "ns"


def parse_timestamps(
    raw: pd.Series, origin: str, unit: str = "s", attrs: Mapping[str, Any] | None = None
) -> pd.Series:
    """Return int64 unix seconds from numbers (in ``unit``, or ``auto``) or date-time strings."""
    if unit not in TIMESTAMP_UNITS and unit != AUTO:
        raise DataValidationError(
            f"{origin}: timestamp_unit must be one of {[*TIMESTAMP_UNITS, AUTO]}, got {unit!r}"
        )
    attrs = raw.attrs if attrs is None else attrs
    null = null_mask(raw)
    if null.any():
        raise column_error(origin, "timestamp", "has empty timestamps", raw, null, attrs)
    if pd.api.types.is_datetime64_any_dtype(raw):
        seconds, used = _datetime_seconds(raw), None
    elif pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        seconds, used = _numeric_seconds(raw, unit)
    else:
        text = raw.astype(str).str.strip()
        numeric = pd.to_numeric(text, errors="coerce")
        if numeric.notna().any():
            # A numeric column with some garbage: the non-numeric values are the bad ones.
            bad = numeric.isna().to_numpy()
            if bad.any():
                raise column_error(origin, "timestamp", "has unparseable timestamps", raw, bad, attrs)
            seconds, used = _numeric_seconds(numeric, unit)
        else:
            parsed = _parse_datetimes(text)
            bad = parsed.isna().to_numpy()
            if bad.any():
                raise column_error(origin, "timestamp", "has unparseable timestamps", raw, bad, attrs)
            seconds, used = _datetime_seconds(parsed), None
    out_of_range = ~np.isfinite(seconds) | (seconds < 0) | (seconds > MAX_TIMESTAMP)
    if out_of_range.any():
        problem = "has times outside 1970..2100"
        if used is not None:  # numbers: most likely the wrong unit
            read_as = f"timestamp_unit={unit!r}" + (f" read them as {used!r}" if used != unit else "")
            problem += f" ({read_as}; is that right?)"
        raise column_error(origin, "timestamp", problem, raw, out_of_range, attrs)
    return pd.Series(seconds.astype("int64"), index=raw.index)


def _numeric_seconds(values: pd.Series, unit: str) -> tuple[np.ndarray, str]:
    """Floored seconds as float64 (non-finite kept for the range check), and the unit used."""
    if pd.api.types.is_integer_dtype(values) and values.dtype.kind == "i":
        ints = values.to_numpy(dtype="int64")
        unit = sniff_unit(ints.astype("float64")) if unit == AUTO else unit
        return (ints // TIMESTAMP_UNITS[unit]).astype("float64"), unit
    floats = values.to_numpy(dtype="float64")
    unit = sniff_unit(floats) if unit == AUTO else unit
    with np.errstate(invalid="ignore", over="ignore"):
        return np.floor(floats / TIMESTAMP_UNITS[unit]), unit


def _parse_datetimes(text: pd.Series) -> pd.Series:
    """Date-times (NaT where unparseable); cells too long to be one are never handed to the parser,
    whose time grows with the square of a cell's length (a 1 MB cell would take minutes)."""
    plausible = text.str.len() <= MAX_DATETIME_CHARS
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us, UTC]")
    if not plausible.any():
        return parsed
    try:
        values = pd.to_datetime(text[plausible], errors="coerce", utc=True, format="mixed")
    except (ValueError, OverflowError):  # a value the parser cannot even coerce: one at a time
        values = text[plausible].map(_parse_one)
    return values.reindex(text.index) if plausible.all() else values.reindex(text.index, fill_value=pd.NaT)


def _parse_one(value: str) -> pd.Timestamp:
    try:
        return pd.to_datetime(value, errors="coerce", utc=True)
    except (ValueError, OverflowError):
        return pd.NaT


def _datetime_seconds(values: pd.Series) -> np.ndarray:
    """Whole seconds since the epoch, at the values' own resolution (far-future dates do not overflow)."""
    if values.dt.tz is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    ticks = values.to_numpy().astype("int64")
    per_second = TIMESTAMP_UNITS[np.datetime_data(values.dtype)[0]]
    return np.floor_divide(ticks, per_second).astype("float64")


def parse_order(
    raw: pd.Series, origin: str, column: str, attrs: Mapping[str, Any] | None = None
) -> pd.Series:
    """An order-only column as int64: whole numbers as given, other numbers by rank."""
    attrs = raw.attrs if attrs is None else attrs
    null = null_mask(raw)
    if null.any():
        raise column_error(
            origin, column, "has empty values (an order is needed on every row)", raw, null, attrs
        )
    numbers = raw
    if is_text(raw) or pd.api.types.is_bool_dtype(raw):
        numbers = pd.to_numeric(raw.astype(str).str.strip(), errors="coerce")
    values = numbers.to_numpy(dtype="float64") if pd.api.types.is_numeric_dtype(numbers) else None
    if values is None:
        raise column_error(origin, column, "is not numeric (an order is a number)", raw, null | True, attrs)
    bad = ~np.isfinite(values)
    if bad.any():
        raise column_error(origin, column, "has values that are not finite numbers", raw, bad, attrs)
    if not values.size or ((values == np.floor(values)).all() and np.abs(values).max() < 2**53):
        return pd.Series(values.astype("int64"), index=raw.index)
    return pd.Series(pd.Series(values).rank(method="dense").to_numpy(dtype="int64"), index=raw.index)
