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
from shopformer.data.schema import (
    EVENT_TYPE,
    ITEM_ID,
    SESSION_ID,
    TIMESTAMP,
    USER_ID,
    DataValidationError,
    EventTable,
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


def _read_table(path: Path, *, sep: str = ",", header: bool = True, names=None) -> pd.DataFrame:
    """Read CSV/TSV (optionally gzipped) or Parquet, recording how to name rows in errors."""
    name = path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        df = pd.read_parquet(path)
        df.attrs.update(row_offset=1, row_word="row")
        return df
    try:
        df = pd.read_csv(path, sep=sep, header=0 if header else None, names=names, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"{path}: cannot be read as delimited text ({exc})") from None
    df.attrs.update(row_offset=2 if header else 1, row_word="line")
    return df


def _ordinal_timestamps(keys: pd.Series) -> pd.Series:
    """Rank of each row within its key, in file order: order-only datasets get this as time."""
    return keys.groupby(keys, sort=False).cumcount().astype("int64")


@dataclass
class TabularSource(EventSource):
    """Any CSV / TSV / Parquet event log, with its columns mapped onto the canonical names.

    ``columns`` maps canonical name -> the file's column name (``item_id: product``).
    """

    path: str = ""
    columns: Mapping[str, str] = field(default_factory=dict)
    sep: str = ","
    timestamp_unit: str = "s"
    event_map: Mapping[str, str] = field(default_factory=dict)
    event_vocabulary: Sequence[str] | None = None
    items_path: str | None = None
    item_columns: Mapping[str, str] = field(default_factory=dict)
    how_to_get = "your own export; see README 'Use your own data'"

    def files(self) -> list[Path]:
        if not self.path:
            raise DataValidationError("data.path is not set: pass data.path=FILE (CSV or Parquet)")
        paths = [self._resolve(self.path)]
        if self.items_path:
            paths.append(self._resolve(self.items_path))
        return paths

    def load(self) -> EventTable:
        files = self.files()
        path = files[0]
        df = _read_table(path, sep=self.sep)
        df = _rename(df, dict(self.columns), str(path))
        events = validate_events(
            df,
            str(path),
            timestamp_unit=self.timestamp_unit,
            event_map=dict(self.event_map) or None,
            event_vocabulary=list(self.event_vocabulary) if self.event_vocabulary else None,
        )
        items = None
        if self.items_path:
            raw_items = _rename(_read_table(files[1], sep=self.sep), dict(self.item_columns), str(files[1]))
            items = validate_items(raw_items, str(files[1]))
        return EventTable(events=events, origin=str(path), items=items)


def _rename(df: pd.DataFrame, mapping: dict[str, str], origin: str) -> pd.DataFrame:
    """Apply a canonical -> file column mapping, failing on mapped columns that are absent."""
    for canonical, theirs in mapping.items():
        if theirs not in df.columns:
            have = ", ".join(map(str, df.columns))
            raise DataValidationError(
                f"{origin}: missing column '{theirs}' (mapped to '{canonical}'; file has: {have})"
            )
    renamed = df.rename(columns={theirs: canonical for canonical, theirs in mapping.items()})
    renamed.attrs = df.attrs
    return renamed


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
        df = _read_table(path, sep=" ", header=False, names=[USER_ID, ITEM_ID])
        if df.shape[1] != 2 or df[ITEM_ID].isna().all():
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
        users, items = [], []
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                tokens = line.split()
                if not tokens:
                    continue
                if len(tokens) < 2:
                    raise DataValidationError(
                        f"{path}: line {number} has a user but no items: {line.strip()!r}"
                    )
                users.append(np.full(len(tokens) - 1, tokens[0], dtype=object))
                items.append(np.asarray(tokens[1:], dtype=object))
        if not users:
            raise DataValidationError(f"{path}: no rows")
        df = pd.DataFrame(
            {
                USER_ID: _as_ids(np.concatenate(users), path, USER_ID),
                ITEM_ID: _as_ids(np.concatenate(items), path, ITEM_ID),
            }
        )
        df[TIMESTAMP] = _ordinal_timestamps(df[USER_ID])
        events = validate_events(df, str(path), has_timestamps=False)
        return EventTable(events=events, origin=str(path), has_timestamps=False)


def _as_ids(tokens: np.ndarray, path: Path, column: str) -> pd.Series:
    numeric = pd.to_numeric(pd.Series(tokens), errors="coerce")
    return numeric.astype("int64") if numeric.notna().all() else pd.Series(tokens, dtype=object)


@dataclass
class MovieLensChronoSource(EventSource):
    """``ratings_chrono.csv.gz``: all ML-1M ratings with original ids and their per-user order."""

    path: str = "ml-1m/ratings_chrono.csv.gz"
    how_to_get = "GroupLens MovieLens-1M ratings ordered per user (see ../shared/data/ml-1m/SOURCE.md)"

    def files(self) -> list[Path]:
        return [self._resolve(self.path)]

    def load(self) -> EventTable:
        path = self.files()[0]
        df = _read_table(path)
        require_columns(df, [USER_ID, ITEM_ID, "seq_pos"], str(path))
        df = df.sort_values([USER_ID, "seq_pos"], kind="stable")
        df.attrs.update(row_offset=2, row_word="line")
        df = df.rename(columns={"seq_pos": TIMESTAMP})
        events = validate_events(df, str(path), has_timestamps=False)
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
        df = _read_table(path, sep="\t", header=False, names=[USER_ID, ITEM_ID, "rating", TIMESTAMP])
        dropped = {}
        if self.min_rating is not None:
            keep = df["rating"] >= self.min_rating
            dropped[f"rating below {self.min_rating}"] = int((~keep).sum())
            df = df[keep]
        # Rows are in random order; ties in time keep a deterministic (item) order.
        df = df.sort_values([USER_ID, TIMESTAMP, ITEM_ID], kind="stable")
        df.attrs.update(row_offset=1, row_word="line")
        events = validate_events(df, str(path))
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
            df = _read_table(path, sep="\t")
            require_columns(df, ["SessionId", "ItemId", "Time"], str(path))
            frames.append(df)
        df = pd.concat(frames, ignore_index=True)
        df = df.sort_values(["SessionId", "Time"], kind="stable")
        df = df.rename(columns={"SessionId": SESSION_ID, "ItemId": ITEM_ID, "Time": TIMESTAMP})
        df.attrs.update(row_offset=1, row_word="row")
        origin = str(self.files()[0].parent)
        return EventTable(events=validate_events(df, origin), origin=origin)


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
        df = _read_table(path)
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
