"""Vocabularies shared by training and serving (torch-free): raw item id <-> internal id, event types.

Internal id 0 is padding in every vocabulary. Items are numbered 1..N in the
sorted order of their raw ids, so the numbering does not depend on row order.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from shopformer.data.schema import ITEM_ID

PAD = 0
PAD_TOKEN = "<pad>"
ITEM = "item"
# Funnel order first, so that common event types get the same ids across datasets.
CANONICAL_EVENT_ORDER = ("view", "cart", "fav", "purchase")


def build_item_vocabulary(raw_ids: pd.Series, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table ``item`` (1..N), ``item_id`` (raw) plus any item attributes given."""
    uniques = np.sort(pd.unique(raw_ids.to_numpy()))
    vocab = pd.DataFrame({ITEM: np.arange(1, len(uniques) + 1, dtype=np.int32), ITEM_ID: uniques})
    if items is not None:
        attributes = items.drop_duplicates(ITEM_ID)
        vocab = vocab.merge(attributes, on=ITEM_ID, how="left", sort=False)
    return vocab


def item_index(vocab: pd.DataFrame) -> pd.Index:
    """Index whose position i holds the raw id of internal item i + 1."""
    return pd.Index(vocab[ITEM_ID].to_numpy())


def encode_items(raw_ids: Iterable, vocab: pd.DataFrame | pd.Index) -> np.ndarray:
    """Internal ids (int32) of raw ids; unknown raw ids map to 0 (the caller counts them)."""
    index = vocab if isinstance(vocab, pd.Index) else item_index(vocab)
    values = raw_ids.to_numpy() if isinstance(raw_ids, pd.Series) else np.asarray(list(raw_ids))
    positions = _lookup(index, values)
    return np.where(positions >= 0, positions + 1, PAD).astype(np.int32)


def _lookup(index: pd.Index, values: np.ndarray) -> np.ndarray:
    positions = index.get_indexer(values)
    if (positions < 0).any() and index.dtype.kind in "iu" and values.dtype.kind not in "iu":
        # Raw ids arrive as strings (JSON, CSV) for an integer-keyed catalogue.
        numeric = pd.to_numeric(pd.Series(values), errors="coerce")
        retry = index.get_indexer(numeric.fillna(-(2**62)).astype("int64").to_numpy())
        positions = np.where(positions >= 0, positions, retry)
    return positions


def build_event_vocabulary(event_types: pd.Series) -> list[str]:
    """``["<pad>", ...]``: canonical funnel types first (when present), others alphabetically."""
    present = set(pd.unique(event_types.to_numpy()).tolist())
    ordered = [e for e in CANONICAL_EVENT_ORDER if e in present]
    ordered += sorted(present - set(CANONICAL_EVENT_ORDER))
    if len(ordered) > 126:
        raise ValueError(f"too many event types ({len(ordered)}); at most 126 are supported")
    return [PAD_TOKEN, *ordered]


def encode_events(event_types: Iterable, vocabulary: list[str]) -> np.ndarray:
    """Internal event-type ids (int8); unknown types map to 0."""
    values = event_types.to_numpy() if isinstance(event_types, pd.Series) else np.asarray(list(event_types))
    positions = pd.Index(vocabulary).get_indexer(values)
    return np.where(positions > 0, positions, PAD).astype(np.int8)
