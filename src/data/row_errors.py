"""One-line errors about bad rows: the file, the column, how many rows, the first as the file has it.

Tables read from text keep every cell as the file's text, so an example value is quoted exactly as
written (``user_id=''``, ``timestamp='tomorrow'``); typed tables (Parquet, in-memory frames) show
the value itself (``null``, ``-5``, ``inf``). ``df.attrs`` says how to number rows
(``row_offset``, ``row_word``, ``positions`` when blank lines were left out) and which file column a
canonical one came from (``file_columns``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from shopformer.errors import DataError

# pandas' default missing-value tokens: text cells that mean "no value" in real exports.
NULL_TOKENS = frozenset(
    {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
)  # fmt: skip
MAX_SHOWN = 60
MAX_NAMES = 12


class DataValidationError(DataError):
    """Input rows violate the canonical event schema."""


def is_text(values: pd.Series) -> bool:
    """Whether a column holds text (read from a delimited file, or strings in a frame)."""
    return pd.api.types.is_string_dtype(values) or pd.api.types.is_object_dtype(values)


def null_mask(values: pd.Series) -> np.ndarray:
    """Missing cells: NaN / None / NaT, and text that is blank or a missing-value token."""
    missing = values.isna().to_numpy(dtype=bool)
    if is_text(values) and not missing.all():
        text = values.astype(str).str.strip()
        missing = missing | text.isin(NULL_TOKENS).to_numpy(dtype=bool)
    return missing


def shown(value: Any) -> str:
    """A cell as the message shows it: text quoted as written (shortened), anything else plainly."""
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= MAX_SHOWN else f"{text[: MAX_SHOWN - 5]}...' ({len(value):,} characters)"
    if value is None or value is pd.NA or value is pd.NaT:
        return "null"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return "null"
    return shown(str(value)) if len(str(value)) > MAX_SHOWN else str(value)


def shown_names(names: Iterable[Any]) -> str:
    """Column names for a message, on one line, the first few of a wide table."""
    cleaned = [" ".join(str(n).split()) for n in names]
    if not cleaned:
        return "(none)"
    short = [n if len(n) <= MAX_SHOWN else f"{n[:MAX_SHOWN]}..." for n in cleaned[:MAX_NAMES]]
    head = ", ".join(short)
    return head if len(cleaned) <= MAX_NAMES else f"{head}, ... ({len(cleaned):,} columns)"


def column_label(attrs: Mapping[str, Any], column: str) -> str:
    """``'customer' (user_id)`` when the file's column has another name than the canonical one."""
    theirs = attrs.get("file_columns", {}).get(column, column)
    return f"'{theirs}'" if theirs == column else f"'{theirs}' ({column})"


def column_error(
    origin: str,
    column: str,
    problem: str,
    values: pd.Series,
    mask: np.ndarray | pd.Series,
    attrs: Mapping[str, Any] | None = None,
) -> DataValidationError:
    """``<file>: column '<col>' <problem>; N bad row(s), first at line L: <col>=<value as written>``."""
    attrs = values.attrs if attrs is None else attrs
    positions = np.flatnonzero(np.asarray(mask))
    row = int(positions[0])
    kept = attrs.get("positions")  # file positions of the rows left after blank lines were dropped
    line = attrs.get("row_offset", 1) + (row if kept is None else int(kept[row]))
    word = attrs.get("row_word", "row")
    detail = f"{positions.size:,} bad row(s), first at {word} {line}: {column}={shown(values.iloc[row])}"
    return DataValidationError(f"{origin}: column {column_label(attrs, column)} {problem}; {detail}")
