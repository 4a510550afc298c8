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
        missing = np.flatnonzero(positions < 0)
        wanted: dict[object, int] = {}
        for value in values[missing]:
            if value not in wanted:
                wanted[value] = _whole_number(value)
        retry = index.get_indexer(np.array([wanted[v] for v in values[missing]], dtype=np.int64))
        positions = positions.copy()
        positions[missing] = retry
    return positions


NOT_AN_ID = -(2**63)  # no catalogue has it: a value that names no whole number looks up nothing


def _whole_number(value: object) -> int:
    """The integer a raw id spells ("42", " 42 ", "42.0", 42.0), exactly (big ids are not rounded
    through floats); :data:`NOT_AN_ID` for anything else ("1.5", "inf", "nan", "x", True)."""
    if isinstance(value, bool | np.bool_):
        return NOT_AN_ID
    text = str(value).strip()
    try:
        number = int(text)
    except ValueError:
        try:
            real = float(text)
        except ValueError:
            return NOT_AN_ID
        if not (np.isfinite(real) and real.is_integer()):
            return NOT_AN_ID
        number = int(real)
    return number if -(2**63) < number < 2**63 else NOT_AN_ID


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
