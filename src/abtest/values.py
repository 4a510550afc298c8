"""Column values read from the file's text: numbers, yes/no flags and times, with one-line errors.

A CSV is read as text so that a value that is not a number is reported as the file shows it (``'12,50'``,
not ``nan``). Empty cells and the usual spellings of "no value" are missing, never an error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shopformer.errors import DataError

MISSING = {"", "na", "n/a", "nan", "null", "none"}
TRUE = {"1", "1.0", "true", "t", "yes", "y"}
FALSE = {"0", "0.0", "false", "f", "no", "n"}


def present(values: pd.Series) -> pd.Series:
    """True where the cell holds a value (not null, not empty, not 'NA' and the like)."""
    text = values.astype(str).str.strip().str.lower()
    return values.notna() & ~text.isin(MISSING)


def numbers(values: pd.Series, column: str, source: str, missing: float = 0.0) -> np.ndarray:
    """Finite floats; ``missing`` where there is no value; text is a :class:`DataError` naming it."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        out = values.astype(np.float64).to_numpy(copy=True)
        bad = np.isinf(out)
        example = values[bad].iloc[0] if bad.any() else None
        out[np.isnan(out)] = missing
    else:
        has = present(values)
        parsed = pd.to_numeric(values.where(has).astype(str).str.strip(), errors="coerce").to_numpy(
            np.float64
        )
        bad = has.to_numpy() & ~np.isfinite(parsed)
        example = values[bad].iloc[0] if bad.any() else None
        out = np.where(has.to_numpy(), parsed, missing)
    if bad.any():
        raise DataError(
            f"{source}: column {column!r} has {int(bad.sum()):,} values that are not numbers "
            f"(e.g. {example!r} in data row {int(np.argmax(bad)) + 1:,})"
        )
    return out


def flags(values: pd.Series, column: str, source: str) -> np.ndarray:
    """1.0 / 0.0 from 1/0, true/false, yes/no (missing: 0); anything else is a :class:`DataError`."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        out = values.astype(np.float64).fillna(0.0).to_numpy()
        bad = ~np.isin(out, (0.0, 1.0))
    else:
        text = values.astype(str).str.strip().str.lower()
        out = text.isin(TRUE).to_numpy(np.float64)
        bad = (present(values) & ~text.isin(TRUE | FALSE)).to_numpy()
    if bad.any():
        example = values[bad].iloc[0]
        raise DataError(
            f"{source}: column {column!r} has {int(bad.sum()):,} values that are not 0/1 or true/false "
            f"(e.g. {example!r} in data row {int(np.argmax(bad)) + 1:,})"
        )
    return out


def times(values: pd.Series, column: str) -> tuple[np.ndarray, str | None]:
    """Seconds (unix seconds, or parsed dates); NaN where unreadable, with a note when some are."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return seconds_since_epoch(pd.to_datetime(values, utc=True)), None
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().sum() >= present(values).sum():
        return numeric.to_numpy(np.float64), None
    parsed = pd.to_datetime(values.where(present(values)), errors="coerce", utc=True, format="mixed")
    seconds = seconds_since_epoch(parsed)
    bad = present(values).to_numpy() & np.isnan(seconds)
    if not bad.any():
        return seconds, None
    example = values[bad].iloc[0]
    note = f"column {column!r}: {int(bad.sum()):,} values are not times (e.g. {example!r}); plots skip them"
    return seconds, note


def seconds_since_epoch(parsed: pd.Series) -> np.ndarray:
    """Unix seconds of UTC timestamps (NaN for NaT)."""
    return (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)
