"""The item table's attributes as arrays indexed by internal id, for the business metrics (torch-free).

A processed dataset's item vocabulary (``item``, ``item_id`` and whatever the source's item table
had: ``category``, ``price``, ``in_stock``) becomes one array per attribute, row 0 being padding. An
attribute the table lacks, or of which no item has a value, is left out: the metrics that need it are
then absent rather than zero.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shopformer.data.vocab import ITEM

CATEGORY, PRICE, IN_STOCK = "category", "price", "in_stock"  # the item table's columns (data.schema)


def item_attribute_arrays(item_vocab: pd.DataFrame) -> dict[str, np.ndarray]:
    """``price`` float64 (NaN = unknown), ``in_stock`` bool (unknown = not in stock), ``category``
    int64 codes (-1 = unknown), each [n_items] with row 0 = padding; only those the table has."""
    n_items = len(item_vocab) + 1
    rows = item_vocab[ITEM].to_numpy(dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    if PRICE in item_vocab.columns:
        price = pd.to_numeric(item_vocab[PRICE], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isfinite(price).any():
            out[PRICE] = _placed(price, rows, n_items, np.nan)
    if IN_STOCK in item_vocab.columns:
        column = item_vocab[IN_STOCK]
        if column.notna().any():
            flags = column.astype("boolean").fillna(False).to_numpy(dtype=bool)
            out[IN_STOCK] = _placed(flags, rows, n_items, False)
    if CATEGORY in item_vocab.columns:
        codes, _ = pd.factorize(item_vocab[CATEGORY].astype("string"), use_na_sentinel=True)
        if (codes >= 0).any():
            out[CATEGORY] = _placed(codes.astype(np.int64), rows, n_items, -1)
    return out


def _placed(values: np.ndarray, rows: np.ndarray, n_items: int, fill) -> np.ndarray:
    """``values`` at their internal ids ``rows`` of an [n_items] array filled with ``fill``."""
    out = np.full(n_items, fill, dtype=values.dtype)
    out[rows] = values
    return out
