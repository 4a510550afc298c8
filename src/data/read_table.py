"""Reading event files: CSV / TSV (optionally compressed) or Parquet, separators named or sniffed.

A user's own log (:func:`read_mapped`) is read as text, so that an error can quote a cell exactly as
the file has it; blank lines are dropped and counted, never silently. The column mapping
(canonical name -> the file's column) wins over a file column that happens to carry a canonical
name, and a canonical name mapped to ``null`` is ignored. Named datasets with a fixed layout use
:func:`read_table` (typed columns).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import itertools
import lzma
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shopformer.data.row_errors import DataValidationError, shown_names
from shopformer.errors import ConfigError, one_line

SEPARATORS = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|", "space": " "}
AUTO = "auto"
SNIFFED = (",", ";", "\t", "|")
SNIFF_BYTES = 64 * 1024
OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
DECOMPRESS_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error)


def is_parquet(path: Path) -> bool:
    return path.name.lower().endswith((".parquet", ".pq"))


def separator_name(sep: str) -> str:
    """How to write ``sep`` on a command line (``semicolon`` rather than a bare ``;``)."""
    return next((name for name, char in SEPARATORS.items() if char == sep), repr(sep))


def resolve_separator(sep: str | None, path: Path) -> str:
    """The one character that ``sep`` names: ``auto`` (sniffed), a name, ``\\t``, or the character."""
    text = "" if sep is None else str(sep)
    if text.lower() == AUTO:
        return sniff_separator(path)
    if text.lower() in SEPARATORS:
        return SEPARATORS[text.lower()]
    if text == "\\t":
        return "\t"
    if len(text) == 1 and text not in '"\r\n':
        return text
    shell = " (in a shell a bare ; ends the command: write semicolon)" if not text else ""
    raise ConfigError(
        f"data.source.sep must be {AUTO}, {', '.join(SEPARATORS)} or one character, got {sep!r}{shell}"
    )


def sniff_separator(path: Path) -> str:
    """The candidate that splits the header into most fields and every sampled line alike.

    The header decides: a separator that does not split it is never chosen, so a ``;`` inside a
    quoted value of a comma file cannot win. A file without any candidate in its header (one
    column) reads as comma-separated.
    """
    text = _head_text(path)
    best, best_rank = ",", (False, 1)
    for candidate in SNIFFED:
        try:
            rows = csv.reader(io.StringIO(text, newline=""), delimiter=candidate)
            widths = [len(row) for row in rows if row]
        except csv.Error:  # e.g. a bare carriage return inside a field: not this separator's file
            continue
        if not widths or widths[0] < 2:
            continue
        rank = (all(w == widths[0] for w in widths[1:]), widths[0])
        if rank > best_rank:
            best, best_rank = candidate, rank
    return best


def _head_text(path: Path) -> str:
    """The first complete lines of the file (up to 64 kB), decoded leniently."""
    opener = OPENERS.get(path.suffix.lower(), open)
    try:
        with opener(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES + 1)
    except DECOMPRESS_ERRORS as exc:
        raise DataValidationError(f"{path}: cannot be read ({one_line(exc)})") from None
    if len(head) > SNIFF_BYTES:
        head = head[: head.rfind(b"\n") + 1] or head
    return head.decode("utf-8-sig", errors="replace")


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` whose failures are one line naming the file."""
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"{path}: is empty (not even a header line)") from None
    except UnicodeDecodeError as exc:
        raise DataValidationError(
            f"{path}: is not UTF-8 text ({exc.reason}: byte {exc.object[exc.start : exc.start + 1]!r}); "
            "save it as UTF-8"
        ) from None
    except (pd.errors.ParserError, ValueError, *DECOMPRESS_ERRORS) as exc:
        raise DataValidationError(f"{path}: cannot be read as delimited text ({one_line(exc)})") from None


def _read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    try:
        return pd.read_parquet(path, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataValidationError(f"{path}: cannot be read as Parquet ({one_line(exc)})") from None


def read_table(path: Path, *, sep: str = ",", header: bool = True, names=None) -> pd.DataFrame:
    """A file of a known layout with typed columns, recording how to name rows in errors.

    Quotes are plain characters here: these formats never quote, and a stray ``"`` must not
    silently join lines into one field.
    """
    if is_parquet(path):
        df = _read_parquet(path)
        df.attrs.update(row_offset=1, row_word="row")
        return df
    df = _read_csv(
        path, sep=sep, header=0 if header else None, names=names, low_memory=False, quoting=csv.QUOTE_NONE
    )
    df.attrs.update(row_offset=2 if header else 1, row_word="line")
    return df


def file_columns(path: Path, sep: str) -> list[str]:
    """The column names of a file (the header line, or the Parquet schema)."""
    if is_parquet(path):
        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowException, OSError) as exc:
            raise DataValidationError(f"{path}: cannot be read as Parquet ({one_line(exc)})") from None
    header = _read_csv(path, sep=sep, nrows=0, dtype=str, encoding="utf-8-sig")
    return [str(c).strip() for c in header.columns]


def plan_columns(
    have: Sequence[str],
    mapping: Mapping[str, str | None],
    known: Sequence[str],
    origin: str,
    *,
    mapped_only: Sequence[str] = (),
) -> dict[str, str]:
    """Canonical name -> file column: the mapping first, then file columns named canonically.

    A mapped column must exist unless it is mapped to its own name (then it is optional, as if
    unmapped); ``null`` ignores the canonical name; ``mapped_only`` names are never taken by name.
    """
    unknown = [k for k in mapping if k not in known]
    if unknown:
        raise ConfigError(f"data.columns.{unknown[0]}: not a canonical column (known: {', '.join(known)})")
    chosen: dict[str, str] = {}
    for canonical, theirs in mapping.items():
        if theirs is None:
            continue
        if str(theirs) in have:
            chosen[canonical] = str(theirs)
        elif str(theirs) != canonical:
            raise DataValidationError(
                f"{origin}: missing column '{theirs}' (mapped to '{canonical}'; "
                f"file has: {shown_names(have)})"
            )
    for canonical in known:
        unmapped = canonical not in mapping and canonical not in mapped_only
        if unmapped and canonical in have and canonical not in chosen.values():
            chosen[canonical] = canonical
    return chosen


def read_mapped(
    path: Path,
    sep: str,
    mapping: Mapping[str, str | None],
    known: Sequence[str],
    *,
    mapped_only: Sequence[str] = (),
    keep_others: bool = False,
) -> tuple[pd.DataFrame, int]:
    """A user's file with canonical column names, and how many blank lines were dropped.

    Delimited text is read as text (every cell as written). ``keep_others`` keeps the columns the
    mapping does not mention under their own names (item attributes).
    """
    parquet = is_parquet(path)
    char = None if parquet else resolve_separator(sep, path)
    have = file_columns(path, char)
    if len(set(have)) < len(have):
        twice = next(c for c in have if have.count(c) > 1)
        raise DataValidationError(f"{path}: has two columns named '{twice}' (file has: {shown_names(have)})")
    try:
        chosen = plan_columns(have, mapping, known, str(path), mapped_only=mapped_only)
    except DataValidationError as exc:
        if char is None or len(have) > 1:
            raise
        # One column only: most likely the wrong separator.
        raise DataValidationError(
            f"{exc} Read as {separator_name(char)}-separated; if that is wrong, set "
            "data.source.sep=comma|semicolon|tab|pipe"
        ) from None
    above = 0
    if parquet:
        raw = _read_parquet(path)
        raw.columns = have
        blank = np.zeros(len(raw), dtype=bool)
    else:
        # Blank lines above the header are not rows: skipped here as the header read skips them.
        above = _blank_lines_above_header(path)
        raw = _read_csv(
            path, sep=char, dtype=str, keep_default_na=False, na_filter=False,
            skip_blank_lines=False, encoding="utf-8-sig", skiprows=above,
        )  # fmt: skip
        if raw.shape[1] != len(have):
            raise DataValidationError(
                f"{path}: the header line names {len(have)} column(s) ({shown_names(have)}) but the "
                f"rows were read as {raw.shape[1]}; is the first line the header?"
            )
        raw.columns = have
        blank = _blank_rows(raw)
    out = pd.DataFrame({canonical: raw[theirs] for canonical, theirs in chosen.items()}, index=raw.index)
    if keep_others:
        for column in have:
            if column not in chosen.values() and column not in known:
                out[column] = raw[column]
    if blank.any():
        out = out[~blank].copy()
    out.attrs.update(
        row_offset=1 if parquet else 2 + above,
        row_word="row" if parquet else "line",
        file_columns=chosen,
        file_has=have,
        separator=None if parquet else char,
        positions=np.flatnonzero(~blank) if blank.any() else None,
    )
    return out, int(blank.sum())


def _blank_lines_above_header(path: Path, limit: int = 1000) -> int:
    """How many empty or whitespace-only lines come before the first line with text (0 when the
    file cannot be read as UTF-8: the CSV reader then says why)."""
    opener = OPENERS.get(path.suffix.lower(), open)
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline=None) as text:
            for count, line in enumerate(itertools.islice(text, limit)):
                if line.strip():
                    return count
    except (UnicodeDecodeError, *DECOMPRESS_ERRORS):
        return 0
    return 0


def _blank_rows(df: pd.DataFrame) -> np.ndarray:
    """Lines without a single non-blank cell (empty lines, or only separators)."""
    blank = np.ones(len(df), dtype=bool)
    for column in df.columns:
        blank &= df[column].str.strip().eq("").to_numpy(dtype=bool)
        if not blank.any():
            break
    return blank
