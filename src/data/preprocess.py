"""From canonical events to encoded, ordered sequences: filter, sessionize, dedupe, k-core, encode.

All steps are column operations on one table (pandas today), so that the same
steps can move to DuckDB / Polars / Spark when the log outgrows memory.
Every dropped row is counted in the returned report: ``rows in source`` (what the source read) =
``events kept`` + every ``dropped...`` count (see :func:`unaccounted_rows`). Rows without a user id
(anonymous sessions) are keyed through their session; the report says how many.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from shopformer.data.schema import (
    EVENT_TYPE,
    ITEM_ID,
    ORDER,
    SESSION_ID,
    TIMESTAMP,
    USER_ID,
    EventTable,
)
from shopformer.data.vocab import (
    build_event_vocabulary,
    build_item_vocabulary,
    encode_events,
    encode_items,
)
from shopformer.errors import DataError

SEQUENCE_KEYS = ("user", "session")


@dataclass
class PreprocessConfig:
    """What to drop and how to cut sequences. Defaults keep everything."""

    keep_event_types: list[str] | None = None
    dedupe_consecutive: bool = True
    min_sequence_length: int = 0
    min_item_count: int = 0
    k_core: bool = False
    session_gap_minutes: float = 30.0
    max_sequence_length: int | None = None


@dataclass
class EncodedEvents:
    """Encoded events sorted by (sequence, time, input order).

    ``events`` columns: ``seq`` (int32, 0..S-1), ``item`` (int32, 1..N; 0 is padding),
    ``event`` (int8, 1..; 0 is padding), ``ts`` (int64), ``session`` (int64, -1 when unknown).
    """

    events: pd.DataFrame
    sequence_keys: pd.DataFrame
    item_vocab: pd.DataFrame
    event_vocab: list[str]
    report: dict[str, int] = field(default_factory=dict)


def preprocess(table: EventTable, config: PreprocessConfig, sequence_key: str = "user") -> EncodedEvents:
    """Run the preprocessing steps in order and encode ids."""
    if sequence_key not in SEQUENCE_KEYS:
        raise DataError(f"data.sequence_key must be one of {SEQUENCE_KEYS}, got {sequence_key!r}")
    df = table.events.copy()
    report: dict[str, int] = {"rows in source": len(df) + sum(table.dropped.values()), "rows read": len(df)}
    for reason, count in table.dropped.items():
        report[f"dropped at source: {reason}"] = count
    df["_row"] = np.arange(len(df), dtype=np.int64)

    if config.keep_event_types is not None:
        keep = df[EVENT_TYPE].isin(list(config.keep_event_types))
        report["dropped: event type not kept"] = int((~keep).sum())
        df = df[keep]
        if df.empty:
            raise DataError(
                f"{table.origin}: no events left after keep_event_types={config.keep_event_types}"
            )

    df = _attach_sessions(df, table, config, sequence_key, report)
    key = "_session" if sequence_key == "session" else "_user"
    if key == "_user":
        df = _user_keys(df, report)
    # An order column breaks ties in time (day-only dates): within one session, by that order.
    ties = ["_session", ORDER] if ORDER in df.columns else []
    df = df.sort_values([key, TIMESTAMP, *ties, "_row"], kind="stable", ignore_index=True)

    if config.dedupe_consecutive:
        # Within a session only: the same item again in a later visit is a revisit, not a repeat.
        same = (
            df[key].eq(df[key].shift())
            & df["_session"].eq(df["_session"].shift())
            & df[ITEM_ID].eq(df[ITEM_ID].shift())
            & df[EVENT_TYPE].eq(df[EVENT_TYPE].shift())
        )
        report["dropped: consecutive duplicates"] = int(same.sum())
        df = df[~same]

    df = _filter_counts(df, key, config, report)
    if config.max_sequence_length:
        rank_from_end = df.groupby(key, sort=False).cumcount(ascending=False)
        keep = rank_from_end < config.max_sequence_length
        report[f"dropped: beyond the most recent {config.max_sequence_length} events"] = int((~keep).sum())
        df = df[keep]
    if df.empty:
        raise DataError(f"{table.origin}: no events left after preprocessing ({report})")

    item_vocab = build_item_vocabulary(df[ITEM_ID], table.items)
    event_vocab = build_event_vocabulary(df[EVENT_TYPE])
    seq_codes, seq_uniques = pd.factorize(df[key], sort=True)
    out = pd.DataFrame(
        {
            "seq": seq_codes.astype(np.int32),
            "item": encode_items(df[ITEM_ID], item_vocab),
            "event": encode_events(df[EVENT_TYPE], event_vocab),
            "ts": df[TIMESTAMP].to_numpy(np.int64),
            "session": df["_session"].to_numpy(np.int64),
        }
    )
    # factorize(sort=True) numbers sequences in key order, and df is sorted by key.
    keys = pd.DataFrame({"seq": np.arange(len(seq_uniques), dtype=np.int32), "key": seq_uniques})
    if USER_ID in df.columns and sequence_key == "session":
        # first() skips missing users; a session without any keeps a missing user_id.
        keys["user_id"] = df.groupby(seq_codes, sort=True)[USER_ID].first().reset_index(drop=True)
    report["events kept"] = len(out)
    return EncodedEvents(out, keys, item_vocab, event_vocab, report)


def unaccounted_rows(report: dict[str, int]) -> int:
    """Rows in the source that are neither kept nor counted as dropped (0 when the books balance)."""
    dropped = sum(count for reason, count in report.items() if reason.startswith("dropped"))
    return report["rows in source"] - report["events kept"] - dropped


def _attach_sessions(
    df: pd.DataFrame, table: EventTable, config: PreprocessConfig, sequence_key: str, report: dict[str, int]
) -> pd.DataFrame:
    """Give every row a ``_session`` number: from ``session_id``, or by inactivity gap per user.

    Rows that have a user but no session id (a partly filled ``session_id``) get gap sessions,
    numbered after the given ones.
    """
    has_user, has_session = USER_ID in df.columns, SESSION_ID in df.columns
    if sequence_key == "user" and not has_user:
        raise DataError(
            f"{table.origin}: no '{USER_ID}' column, so sequences cannot be per user; "
            "use data.sequence_key=session"
        )
    if not has_session:
        if not table.has_timestamps and sequence_key == "user":
            df["_session"] = -1
            return df
        df["_session"] = _gap_sessions(df, table, config)
        return df
    codes = pd.factorize(df[SESSION_ID], sort=True)[0].astype(np.int64)
    missing = codes < 0
    if missing.any():
        # Validation guarantees a user on every row without a session id.
        report["rows without a session id, sessionized by inactivity gap"] = int(missing.sum())
        codes[missing] = codes.max() + 1 + _gap_sessions(df[missing], table, config)
    df["_session"] = codes
    return df


def _gap_sessions(df: pd.DataFrame, table: EventTable, config: PreprocessConfig) -> np.ndarray:
    """Session numbers 0.. by inactivity gap within each user, in the rows' order."""
    if not table.has_timestamps:
        raise DataError(
            f"{table.origin}: has no session ids and no real timestamps (order only), so "
            "sessions cannot be derived by inactivity gap; use data.sequence_key=user"
        )
    ties = [ORDER] if ORDER in df.columns else []
    order = df.sort_values([USER_ID, TIMESTAMP, *ties, "_row"], kind="stable")
    gap = order[TIMESTAMP].diff()
    new_user = order[USER_ID].ne(order[USER_ID].shift())
    starts = new_user | (gap > config.session_gap_minutes * 60)
    return (starts.cumsum() - 1).reindex(df.index).to_numpy(np.int64)


def _user_keys(df: pd.DataFrame, report: dict[str, int]) -> pd.DataFrame:
    """``_user``: the user id; a row without one takes its session's user, else its session is its own.

    A session with a known user on some rows (a visitor who logged in part-way) belongs to that
    user (the earliest known one); a session without any is an anonymous visitor, a sequence of
    its own, keyed ``session <id>``. Both are counted in the report, nothing is dropped.
    """
    users = df[USER_ID]
    missing = users.isna().to_numpy()
    if not missing.any():
        df["_user"] = users
        return df
    known = df[~missing].sort_values([TIMESTAMP, "_row"], kind="stable")
    session_user = known.groupby("_session", sort=False)[USER_ID].first()
    filled = df["_session"].map(session_user)
    fill = missing & filled.notna().to_numpy()
    report["user ids taken from their session"] = int(fill.sum())
    anonymous = missing & ~fill
    if not anonymous.any():
        df["_user"] = users.where(~fill, filled).astype(users.dtype)
        if pd.api.types.is_integer_dtype(df["_user"]):
            df["_user"] = df["_user"].astype("int64")
        return df
    report["rows of anonymous sessions, each its own sequence"] = int(anonymous.sum())
    text = users.where(~fill, filled).map(str).astype(object)
    text[anonymous] = "session " + df.loc[anonymous, SESSION_ID].map(str)
    df["_user"] = text
    return df


def _filter_counts(
    df: pd.DataFrame, key: str, config: PreprocessConfig, report: dict[str, int]
) -> pd.DataFrame:
    """Minimum item / sequence counts, once or (``k_core``) until both hold."""
    if not (config.min_item_count or config.min_sequence_length):
        return df
    dropped_items = dropped_seqs = 0
    while True:
        before = len(df)
        if config.min_item_count:
            counts = df[ITEM_ID].map(df[ITEM_ID].value_counts())
            keep = counts >= config.min_item_count
            dropped_items += int((~keep).sum())
            df = df[keep]
        if config.min_sequence_length:
            lengths = df.groupby(key, sort=False)[key].transform("size")
            keep = lengths >= config.min_sequence_length
            dropped_seqs += int((~keep).sum())
            df = df[keep]
        if not config.k_core or len(df) == before:
            break
    if config.min_item_count:
        report[f"dropped: items with < {config.min_item_count} events"] = dropped_items
    if config.min_sequence_length:
        report[f"dropped: sequences with < {config.min_sequence_length} events"] = dropped_seqs
    return df
