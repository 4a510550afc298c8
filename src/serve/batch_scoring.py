"""Batch scoring: sessions from Parquet in, one row per (session, rank) out.

Two input layouts:

- one row per session: ``session_id`` (or ``user_id``) and ``items``, a list column of raw ids
  oldest first; optional list columns ``event_types`` and ``timestamps``;
- a long event table: ``session_id`` (or ``user_id``), ``item_id``, optional ``timestamp`` (unix
  seconds or datetime) and ``event_type``; events are grouped per session in time order
  (file order among equal or absent timestamps).

Output columns: the session key, ``rank`` (1 = best), ``item_id`` (raw) and ``score``; or, for
journey scores (:func:`score_journey_table`), one row per session (the "batch pattern": scores
written for CRM systems to read).

Recommendations may be constrained by business rules (``filters``, as in the HTTP body; see
``serve/rules.py``), and the report describes the lists written (:func:`list_report`), as far as the
bundle's item table allows: ``in_stock`` (mean share of a list in stock), ``diversity`` (mean distinct
categories / k, as ``diversity@K`` in evaluation) and ``mean_price`` (mean price of a list's priced items).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shopformer.errors import DataError, RequestError
from shopformer.serve.journey import JourneyScore
from shopformer.serve.recommender import Recommender
from shopformer.serve.rules import IN_STOCK, Filters, ItemAttributes, Rules
from shopformer.serve.sessions import Session

KEYS = ("session_id", "user_id")
LIST_COLUMNS = {"items": "items", "event_types": "event_types", "timestamps": "timestamps"}
LONG_COLUMNS = {"items": "item_id", "event_types": "event_type", "timestamps": "timestamp"}


class InputError(DataError):
    """An input file that cannot be scored; the message names the file and the column."""


@dataclass
class SessionTable:
    """Sessions in input order: key values and per-session lists (None where a channel is absent)."""

    key: str
    ids: pd.Series  # the session key per session (its input dtype)
    items: list[list[Any]]
    event_types: list[list[str]] | None
    timestamps: list[list[int]] | None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class ScoreReport:
    sessions: int
    rows: int
    with_unknown: int  # sessions with at least one unknown item
    unanswered: int  # sessions with no known item (no rows written)
    seconds: float
    lists: dict[str, float] = field(default_factory=dict)  # list_report of what was written


def read_sessions(path: str | os.PathLike) -> SessionTable:
    """Read either layout (see the module docstring) into a :class:`SessionTable`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input {path}: no such file")
    try:
        frame = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"input {path}: not a readable Parquet file ({exc})") from None
    key = next((k for k in KEYS if k in frame.columns), None)
    if key is None:
        raise InputError(f"input {path}: needs a session_id or user_id column (found: {_names(frame)})")
    if "items" in frame.columns:
        return _from_lists(frame, key, path)
    if "item_id" in frame.columns:
        return _from_events(frame, key, path)
    raise InputError(
        f"input {path}: needs an 'items' list column (one row per session) or an 'item_id' column "
        f"(one row per event); found: {_names(frame)}"
    )


def score_sessions(
    rec: Recommender,
    table: SessionTable,
    *,
    k: int = 10,
    batch_size: int = 256,
    exclude_seen: bool = True,
    filters: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, ScoreReport]:
    """Recommendations for every session, ``batch_size`` sessions per encoder call, under ``filters``
    (a :class:`~shopformer.serve.rules.FilterError` before any work when they do not fit the bundle)."""
    started = time.perf_counter()
    if filters:
        Rules(filters, rec.attributes)  # checked once against the item table, not per session
    parsed = Filters.parse(filters) if filters else None
    rows, ranks, items, scores = [], [], [], []
    with_unknown = unanswered = 0
    for start, batch in _batches(table, batch_size, k, exclude_seen, parsed):
        try:
            results = rec.recommend_batch(batch)
        except RequestError as exc:
            row, *field = exc.loc
            column = LIST_COLUMNS.get(field[0], field[0]) if field else "?"
            raise InputError(f"session {table.ids.iloc[start + row]!r}, {column}: {exc.message}") from None
        for offset, result in enumerate(results):
            with_unknown += bool(result.unknown_items)
            unanswered += not result.items
            rows += [start + offset] * len(result.items)
            ranks += range(1, len(result.items) + 1)
            items += [item for item, _ in result.items]
            scores += [score for _, score in result.items]
        if progress is not None:
            progress(len(batch))
    frame = pd.DataFrame(
        {
            table.key: table.ids.iloc[rows].reset_index(drop=True),
            "rank": np.asarray(ranks, dtype=np.int32),
            "item_id": pd.Series(items, dtype=rec.raw_ids.dtype if items else object),
            "score": np.asarray(scores, dtype=np.float32),
        }
    )
    internal = rec.attributes.raw_index.get_indexer(frame["item_id"]) + 1
    lists = list_report(rec.attributes, np.asarray(rows, dtype=np.int64), internal, k)
    seconds = time.perf_counter() - started
    return frame, ScoreReport(len(table), len(frame), with_unknown, unanswered, seconds, lists)


def list_report(
    attributes: ItemAttributes, sessions: np.ndarray, ids: np.ndarray, k: int
) -> dict[str, float]:
    """What the written lists are like, averaged over the sessions that got one: ``in_stock`` (share of
    the list in stock), ``diversity`` (distinct known categories / ``k``), ``mean_price`` (of the list's
    priced items; sessions without one are left out). Only those the item table allows.

    ``sessions``: the session of each written row, ``ids``: its internal item id.
    """
    if not ids.size:
        return {}
    _, session, per_list = np.unique(sessions, return_inverse=True, return_counts=True)
    out: dict[str, float] = {}
    if IN_STOCK in attributes.flags:
        in_stock = np.bincount(session, weights=attributes.flags[IN_STOCK][ids]) / per_list
        out["in_stock"] = float(in_stock.mean())
    if attributes.category is not None:
        codes = attributes.category[ids]
        known = codes >= 0
        pairs = np.unique(np.stack([session[known], codes[known]]), axis=1)
        out["diversity"] = float((np.bincount(pairs[0], minlength=per_list.size) / k).mean())
    if attributes.price is not None:
        price = attributes.price[ids]
        priced = np.isfinite(price)
        n_priced = np.bincount(session[priced], minlength=per_list.size)
        total = np.bincount(session[priced], weights=price[priced], minlength=per_list.size)
        if n_priced.any():
            out["mean_price"] = float((total[n_priced > 0] / n_priced[n_priced > 0]).mean())
    return out


def score_journey_table(
    rec: Recommender,
    table: SessionTable,
    *,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """One row per session: the key, ``n_events``, ``unknown_items`` (count), ``p_<event type>`` per
    class, ``next_event_type``, ``conversion``, ``abandonment`` (NaN without an open cart), ``cart_open``."""
    classes = rec.require_journey().classes
    rows: list[JourneyScore] = []
    for start, batch in _batches(table, batch_size):
        try:
            rows += rec.journey_batch(batch)
        except RequestError as exc:
            row, *rest = exc.loc
            raise RequestError((start + row, *rest), exc.message) from None
        if progress is not None:
            progress(len(batch))
    nan = float("nan")
    frame = pd.DataFrame(
        {
            table.key: table.ids.reset_index(drop=True),
            "n_events": np.asarray([len(items) for items in table.items], dtype=np.int32),
            "unknown_items": np.asarray([len(r.unknown_items) for r in rows], dtype=np.int32),
        }
    )
    for c in classes:
        frame[f"p_{c}"] = np.asarray([nan if r.event_probs is None else r.event_probs[c] for r in rows])
    frame["next_event_type"] = pd.Series([r.next_event_type for r in rows], dtype="string")
    frame["conversion"] = np.asarray([nan if r.conversion is None else r.conversion for r in rows])
    frame["abandonment"] = np.asarray([nan if r.abandonment is None else r.abandonment for r in rows])
    frame["cart_open"] = np.asarray([r.cart_open for r in rows], dtype=bool)
    return frame


def write_recommendations(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write Parquet atomically (a partial file never replaces a previous result)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def progress_bar(total: int) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(advance, close) of a tqdm bar on stderr, or of plain progress lines without tqdm."""
    try:
        from tqdm import tqdm  # optional: plain progress lines without it
    except ImportError:
        done = [0]

        def advance(n: int) -> None:
            step = max(1, total // 10)
            before, done[0] = done[0], done[0] + n
            if done[0] // step > before // step or done[0] == total:
                print(f"scored {done[0]}/{total} sessions", file=sys.stderr, flush=True)

        return advance, lambda: None
    bar = tqdm(total=total, unit="session", file=sys.stderr, disable=None)
    return bar.update, bar.close


def _batches(
    table: SessionTable, size: int, k: int = 10, exclude_seen: bool = True, filters: Filters | None = None
) -> Iterator[tuple[int, list[Session]]]:
    for start in range(0, len(table), size):
        stop = min(start + size, len(table))
        yield (
            start,
            [
                Session(
                    table.items[i],
                    None if table.event_types is None else table.event_types[i],
                    None if table.timestamps is None else table.timestamps[i],
                    k=k,
                    exclude_seen=exclude_seen,
                    filters=filters,
                )
                for i in range(start, stop)
            ],
        )


def _from_lists(frame: pd.DataFrame, key: str, path: Path) -> SessionTable:
    channels = {}
    for name in LIST_COLUMNS:
        if name not in frame.columns:
            channels[name] = None
            continue
        column = frame[name]
        if column.isna().any():
            raise InputError(
                f"input {path}: column {name} has null lists (row {int(column.isna().argmax())})"
            )
        channels[name] = [list(v) if name != "timestamps" else _seconds(v, path, name) for v in column]
    _check_keys(frame, key, path)
    ids = frame[key].reset_index(drop=True)
    return SessionTable(key, ids, channels["items"], channels["event_types"], channels["timestamps"])


def _from_events(frame: pd.DataFrame, key: str, path: Path) -> SessionTable:
    _check_keys(frame, key, path)
    if frame["item_id"].isna().any():
        row = int(frame["item_id"].isna().to_numpy().argmax())
        raise InputError(f"input {path}: column item_id has null values (row {row})")
    codes, uniques = pd.factorize(frame[key], sort=False)  # sessions in order of first appearance
    stamps = _seconds(frame["timestamp"], path, "timestamp") if "timestamp" in frame.columns else None
    order = np.lexsort((stamps, codes)) if stamps is not None else np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(uniques)))[:-1]

    def split(values: np.ndarray) -> list[list[Any]]:
        return [part.tolist() for part in np.split(values[order], bounds)]

    events = None
    if "event_type" in frame.columns:
        events = split(frame["event_type"].astype("string").fillna("view").to_numpy(dtype=object))
    return SessionTable(
        key,
        pd.Series(uniques),
        split(frame["item_id"].to_numpy()),
        events,
        None if stamps is None else split(stamps),
    )


def _seconds(values: Any, path: Path, column: str) -> np.ndarray:
    """Unix seconds (int64) from numbers or datetimes."""
    series = pd.Series(values)
    try:
        if pd.api.types.is_datetime64_any_dtype(series):
            return (series.astype("datetime64[s]").astype("int64")).to_numpy()
        return pd.to_numeric(series, errors="raise").astype("int64").to_numpy()
    except (TypeError, ValueError) as exc:
        raise InputError(f"input {path}: column {column} is not unix seconds or datetimes ({exc})") from None


def _check_keys(frame: pd.DataFrame, key: str, path: Path) -> None:
    if frame[key].isna().any():
        row = int(frame[key].isna().to_numpy().argmax())
        raise InputError(f"input {path}: column {key} has null values (row {row})")


def _names(frame: pd.DataFrame) -> str:
    return ", ".join(map(str, frame.columns)) or "no columns"
