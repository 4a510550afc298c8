"""Sources: adapters that turn a file format (or the synthetic generator) into the canonical event table.

Each source is a small dataclass built by Hydra from ``conf/data/*.yaml``; ``load()``
returns an :class:`EventTable`, ``fingerprint()`` identifies the input for the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shopformer.data.paths import resolve_data_file
from shopformer.data.read_table import read_mapped, read_table, separator_name
from shopformer.data.row_errors import column_error, shown_names
from shopformer.data.schema import (
    EVENT_COLUMNS,
    EVENT_TYPE,
    ITEM_COLUMNS,
    ITEM_ID,
    ORDER,
    SESSION_ID,
    TIMESTAMP,
    USER_ID,
    DataValidationError,
    EventTable,
    normalise_id,
    require_columns,
    validate_events,
    validate_items,
)
from shopformer.data.synthetic import GENERATOR_VERSION, SyntheticConfig, generate


class EventSource(ABC):
    """Something that yields canonical events."""

    how_to_get: str = ""

    @abstractmethod
    def load(self) -> EventTable:
        """Read, validate and normalise the input."""

    def files(self) -> list[Path]:
        """The input files (resolved), for the cache fingerprint."""
        return []

    def fingerprint(self) -> dict[str, Any]:
        """Parameters and file identities: a change here invalidates cached datasets."""
        params = dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}
        stats = []
        for path in self.files():
            st = path.stat()
            stats.append({"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "params": params,
            "files": stats,
        }

    def _resolve(self, path: str | os.PathLike) -> Path:
        return resolve_data_file(path, self.how_to_get)


def _ordinal_timestamps(keys: pd.Series) -> pd.Series:
    """Rank of each row within its key, in file order: order-only datasets get this as time."""
    return keys.groupby(keys, sort=False, dropna=False).cumcount().astype("int64")


@dataclass
class TabularSource(EventSource):
    """Any CSV / TSV / Parquet event log, with its columns mapped onto the canonical names.

    ``columns`` maps canonical name -> the file's column name (``item_id: product``); the mapping
    wins over a file column that carries a canonical name, and ``null`` ignores one. ``sep`` is
    ``auto`` (sniffed), ``comma``, ``semicolon``, ``tab``, ``pipe`` or the character itself;
    ``timestamp_unit`` is ``auto`` (by magnitude) or ``s`` / ``ms`` / ``us`` / ``ns``.
    """

    path: str = ""
    columns: Mapping[str, str | None] = field(default_factory=dict)
    sep: str = "auto"
    timestamp_unit: str = "auto"
    event_map: Mapping[str, str] = field(default_factory=dict)
    event_vocabulary: Sequence[str] | None = None
    items_path: str | None = None
    item_columns: Mapping[str, str | None] = field(default_factory=dict)
    how_to_get = "your own export; see README 'Use your own data'"

    def files(self) -> list[Path]:
        if not self.path:
            raise DataValidationError("data.path is not set: pass data.path=FILE (CSV or Parquet)")
        return [self._own_file(p) for p in (self.path, self.items_path) if p]

    def _own_file(self, path: str) -> Path:
        """A relative path is looked up in the current directory first, then under the data root."""
        here = Path(path).expanduser()
        return here.resolve() if here.is_file() else self._resolve(path)

    def load(self) -> EventTable:
        files = self.files()
        path = files[0]
        df, blank = read_mapped(
            path, self.sep, dict(self.columns), (*EVENT_COLUMNS, ORDER), mapped_only=(ORDER,)
        )
        _require_event_columns(df, str(path))
        events = validate_events(
            df,
            str(path),
            timestamp_unit=self.timestamp_unit,
            event_map=dict(self.event_map) or None,
            event_vocabulary=list(self.event_vocabulary) if self.event_vocabulary else None,
        )
        items = None
        if self.items_path:
            raw_items, _ = read_mapped(
                files[1], self.sep, dict(self.item_columns), ITEM_COLUMNS, keep_others=True
            )
            items = validate_items(raw_items, str(files[1]))
        dropped = {"blank lines": blank} if blank else {}
        return EventTable(events=events, origin=str(path), items=items, dropped=dropped)


def _require_event_columns(df: pd.DataFrame, origin: str) -> None:
    """The columns every log needs; when one is missing, say how the file was split into columns."""
    sep = df.attrs.get("separator")
    hint = (
        ""
        if sep is None
        else f"Read as {separator_name(sep)}-separated; if that is wrong, set "
        "data.source.sep=comma|semicolon|tab|pipe, and map columns with data.columns.<name>=COLUMN"
    )
    missing = [f"'{c}'" for c in (ITEM_ID, TIMESTAMP) if c not in df.columns]
    if USER_ID not in df.columns and SESSION_ID not in df.columns:
        missing.append(f"'{USER_ID}' or '{SESSION_ID}'")
    if missing:
        have = shown_names(df.attrs.get("file_has", df.columns))
        message = f"{origin}: missing column {missing[0]} (file has: {have}). {hint}"
        raise DataValidationError(message.strip())


@dataclass
class SasrecTxtSource(EventSource):
    """The SASRec benchmark format: one ``<user> <item>`` pair per line, users' rows in order."""

    path: str = "ml-1m/ml-1m.txt"
    how_to_get = (
        "kang205/SASRec data/ml-1m.txt (MovieLens-1M, GroupLens research terms); "
        "see ../shared/data/ml-1m/SOURCE.md"
    )

    def files(self) -> list[Path]:
        return [self._resolve(self.path)]

    def load(self) -> EventTable:
        path = self.files()[0]
        df = read_table(path, sep=" ", header=False, names=[USER_ID, ITEM_ID])
        if df[ITEM_ID].isna().all():
            raise DataValidationError(f"{path}: expected two space-separated columns 'user item'")
        df[TIMESTAMP] = _ordinal_timestamps(df[USER_ID])
        events = validate_events(df, str(path), has_timestamps=False)
        return EventTable(events=events, origin=str(path), has_timestamps=False)


@dataclass
class S3RecTxtSource(EventSource):
    """The S3-Rec format (Amazon Beauty/Sports/Toys, Yelp): ``<user> <item> <item> ...`` per line."""

    path: str = "amazon-yelp-s3rec/Beauty.txt"
    how_to_get = (
        "salesforce/ICLRec data/*.txt (S3-Rec preprocessing of Amazon 2014 / Yelp); "
        "see ../shared/data/amazon-yelp-s3rec/SOURCE.md"
    )

    def files(self) -> list[Path]:
        return [self._resolve(self.path)]

    def load(self) -> EventTable:
        path = self.files()[0]
        users, items, lines = [], [], []
        try:
            with open(path, encoding="utf-8") as fh:
                for number, line in enumerate(fh, start=1):
                    tokens = line.split()
                    if not tokens:
                        continue
                    if len(tokens) < 2:
                        raise DataValidationError(
                            f"{path}: line {number} has a user but no items: {line.strip()[:60]!r}"
                        )
                    users.append(np.full(len(tokens) - 1, tokens[0], dtype=object))
                    items.append(np.asarray(tokens[1:], dtype=object))
                    lines.append(np.full(len(tokens) - 1, number - 1, dtype=np.int64))
        except UnicodeDecodeError as exc:
            raise DataValidationError(f"{path}: is not UTF-8 text ({exc.reason})") from None
        if not users:
            raise DataValidationError(f"{path}: no rows")
        df = pd.DataFrame(
            {USER_ID: normalise_id(pd.Series(np.concatenate(users))), ITEM_ID: np.concatenate(items)}
        )
        df[TIMESTAMP] = _ordinal_timestamps(df[USER_ID])
        df.attrs.update(row_offset=1, row_word="line", positions=np.concatenate(lines))
        events = validate_events(df, str(path), has_timestamps=False)
        return EventTable(events=events, origin=str(path), has_timestamps=False)


@dataclass
class MovieLensChronoSource(EventSource):
    """``ratings_chrono.csv.gz``: all ML-1M ratings with original ids and their per-user order."""

    path: str = "ml-1m/ratings_chrono.csv.gz"
    how_to_get = "GroupLens MovieLens-1M ratings ordered per user (see ../shared/data/ml-1m/SOURCE.md)"

    def files(self) -> list[Path]:
        return [self._resolve(self.path)]

    def load(self) -> EventTable:
        path = self.files()[0]
        df = read_table(path)
        require_columns(df, [USER_ID, ITEM_ID, "seq_pos"], str(path))
        df = df.rename(columns={"seq_pos": TIMESTAMP})
        events = validate_events(df, str(path), has_timestamps=False)
        events = events.sort_values([USER_ID, TIMESTAMP], kind="stable", ignore_index=True)
        return EventTable(events=events, origin=str(path), has_timestamps=False)


@dataclass
class MovieLens100kSource(EventSource):
    """ML-100K ``u.data``: tab-separated ``user item rating unix_time``."""

    path: str = "ml-100k/u.data"
    min_rating: float | None = None
    how_to_get = "https://grouplens.org/datasets/movielens/100k/ (u.data)"

    def files(self) -> list[Path]:
        return [self._resolve(self.path)]

    def load(self) -> EventTable:
        path = self.files()[0]
        df = read_table(path, sep="\t", header=False, names=[USER_ID, ITEM_ID, "rating", TIMESTAMP])
        dropped = {}
        if self.min_rating is not None:
            rating = pd.to_numeric(df["rating"], errors="coerce")
            bad = rating.isna().to_numpy()
            if bad.any():
                raise column_error(str(path), "rating", "has values that are not numbers", df["rating"], bad)
            keep = (rating >= self.min_rating).to_numpy()
            dropped[f"rating below {self.min_rating}"] = int((~keep).sum())
            df = df[keep]
            df.attrs.update(positions=np.flatnonzero(keep))
        events = validate_events(df, str(path))
        # Rows are in random order; ties in time keep a deterministic (item) order.
        events = events.sort_values([USER_ID, TIMESTAMP, ITEM_ID], kind="stable", ignore_index=True)
        return EventTable(events=events, origin=str(path), dropped=dropped)


@dataclass
class YoochooseSource(EventSource):
    """The session-rec YOOCHOOSE click sample: TSV ``SessionId ItemId Time`` (float seconds)."""

    paths: Sequence[str] = (
        "yoochoose-100k/yoochoose-clicks-100k_train_full.txt",
        "yoochoose-100k/yoochoose-clicks-100k_test.txt",
    )
    how_to_get = (
        "rn5l/session-rec data/rsc15/prepared (RecSys Challenge 2015 clicks); "
        "see ../shared/data/yoochoose-100k/SOURCE.md"
    )

    def files(self) -> list[Path]:
        return [self._resolve(p) for p in self.paths]

    def load(self) -> EventTable:
        frames = []
        for path in self.files():
            df = read_table(path, sep="\t")
            require_columns(df, ["SessionId", "ItemId", "Time"], str(path))
            df = df.rename(columns={"SessionId": SESSION_ID, "ItemId": ITEM_ID, "Time": TIMESTAMP})
            events = validate_events(df, str(path))
            # Order within a second by the file's fractional time.
            events["_time"] = pd.to_numeric(df[TIMESTAMP], errors="coerce").to_numpy()
            frames.append(events)
        events = _concat_events(frames).sort_values([SESSION_ID, TIMESTAMP, "_time"], kind="stable")
        origin = str(self.files()[0].parent)
        return EventTable(events=events.drop(columns="_time").reset_index(drop=True), origin=origin)


def _concat_events(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Validated tables one after another; an id column that is numbers in one file and text in
    another becomes text throughout (one type per column)."""
    events = pd.concat(frames, ignore_index=True)
    for column in (USER_ID, SESSION_ID, ITEM_ID):
        kinds = {frame[column].dtype.kind for frame in frames if column in frame}
        if len(kinds) > 1:
            events[column] = events[column].map(lambda v: v if v is None or v is pd.NA else str(v))
    return events


TAOBAO_EVENTS = {"pv": "view", "cart": "cart", "fav": "fav", "buy": "purchase"}


@dataclass
class TaobaoSource(EventSource):
    """Taobao UserBehavior CSV: ``user_id,item_id,category_id,behavior_type,timestamp``."""

    path: str = "taobao-userbehavior-110k/UserBehavior_2017-11-26_0100-0310_110k.csv.gz"
    how_to_get = (
        "Alibaba Tianchi dataset 649 (UserBehavior), research use; "
        "see ../shared/data/taobao-userbehavior-110k/SOURCE.md"
    )

    def files(self) -> list[Path]:
        return [self._resolve(self.path)]

    def load(self) -> EventTable:
        path = self.files()[0]
        df = read_table(path)
        require_columns(df, [USER_ID, ITEM_ID, "category_id", "behavior_type", TIMESTAMP], str(path))
        df = df.rename(columns={"behavior_type": EVENT_TYPE})
        events = validate_events(
            df, str(path), event_map=TAOBAO_EVENTS, event_vocabulary=list(TAOBAO_EVENTS.values())
        )
        items = (
            df[[ITEM_ID, "category_id"]].drop_duplicates(ITEM_ID).rename(columns={"category_id": "category"})
        )
        return EventTable(events=events, origin=str(path), items=validate_items(items, str(path)))


@dataclass(frozen=True)
class SyntheticSource(SyntheticConfig, EventSource):
    """The built-in synthetic e-commerce log; its fields are :class:`SyntheticConfig`'s."""

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "generator": GENERATOR_VERSION}

    def load(self) -> EventTable:
        events, items = generate(SyntheticConfig(**dataclasses.asdict(self)))
        origin = f"synthetic(seed={self.seed})"
        return EventTable(
            events=validate_events(events, origin), origin=origin, items=validate_items(items, origin)
        )


class FrameSource(EventSource):
    """Events already in memory (a DataFrame with canonical column names), for notebooks and tests."""

    def __init__(
        self,
        events: pd.DataFrame,
        items: pd.DataFrame | None = None,
        has_timestamps: bool = True,
        origin: str = "dataframe",
    ) -> None:
        self.events, self.items, self.has_timestamps, self.origin = (events, items, has_timestamps, origin)

    def load(self) -> EventTable:
        events = validate_events(self.events, self.origin, has_timestamps=self.has_timestamps)
        items = None if self.items is None else validate_items(self.items, self.origin)
        return EventTable(events=events, origin=self.origin, items=items, has_timestamps=self.has_timestamps)

    def fingerprint(self) -> dict[str, Any]:
        content = pd.util.hash_pandas_object(self.events, index=False).to_numpy()
        digest = hashlib.sha256(content.tobytes()).hexdigest()
        return {
            "class": "FrameSource",
            "rows": len(self.events),
            "sha256": digest,
            "has_timestamps": self.has_timestamps,
        }
