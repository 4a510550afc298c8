"""Business rules over retrieved candidates: exclusions, availability, category, price range, boosts.

Filters are given as a plain mapping (the HTTP body's ``filters`` object)::

    {
      "in_stock": true,                      # only items whose boolean ``in_stock`` is true
      "categories": ["shoes", "bags"],       # only these categories (``category`` column)
      "exclude_categories": ["gift-cards"],  # never these categories
      "min_price": 10.0, "max_price": 99.0,  # inclusive range on ``price``; no price -> excluded
      "exclude_items": [123, 456],           # raw ids never to recommend
      "boosts": {"new_arrival": 0.2},        # + 0.2 to the score of items whose boolean column is true
      "boost_items": {"123": 0.5}            # + 0.5 to the score of these raw ids
    }

Boosts are **additive** on the model's score (query . item vector) and may be negative
(demotion); an item matching several boosts gets their sum. Returned scores include the boosts.

:class:`Rules` compiles filters once per request against :class:`ItemAttributes` (arrays indexed by
internal id, built once per bundle) and then works on candidate arrays with numpy only. A filter on
an attribute this bundle's item table lacks is a :class:`FilterError` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shopformer.data.vocab import encode_items
from shopformer.errors import RequestError

CATEGORY = "category"
PRICE = "price"
IN_STOCK = "in_stock"
FILTER_KEYS = (
    "in_stock",
    "categories",
    "exclude_categories",
    "min_price",
    "max_price",
    "exclude_items",
    "boosts",
    "boost_items",
)


class FilterError(RequestError):
    """Filters that do not fit this bundle (unknown key, missing attribute, bad range)."""


class ItemAttributes:
    """Item attributes as arrays indexed by internal id (row 0 = padding, never eligible)."""

    def __init__(self, vocab: pd.DataFrame) -> None:
        n = len(vocab) + 1
        self.raw_index = pd.Index(vocab["item_id"].to_numpy())
        # An int64-keyed catalogue in ascending order (how vocabularies are built) is searched with
        # numpy: pandas' get_indexer costs about 0.2 ms a call, most of a single session's lookup.
        ordered = self.raw_index.dtype == np.int64 and self.raw_index.is_monotonic_increasing
        self._int_keys = self.raw_index.to_numpy() if ordered and self.raw_index.is_unique and n > 1 else None
        self.flags: dict[str, np.ndarray] = {}  # boolean columns (missing -> False)
        self.price: np.ndarray | None = None
        self.category: np.ndarray | None = None  # int32 codes, -1 = missing
        self.categories: dict[str, int] = {}  # category name -> code
        for name in vocab.columns.drop(["item", "item_id"], errors="ignore"):
            column = vocab[name]
            if name == CATEGORY:
                codes, uniques = pd.factorize(column.astype("string"), use_na_sentinel=True)
                self.category = _padded(codes.astype(np.int32), -1)
                self.categories = {str(name): code for code, name in enumerate(uniques)}
            elif name == PRICE and _is_number(column):
                self.price = _padded(column.to_numpy(dtype=np.float64, na_value=np.nan), np.nan)
            elif pd.api.types.is_bool_dtype(column) or _is_boolean_object(column):
                self.flags[name] = _padded(column.fillna(False).to_numpy(dtype=bool), False)
        self.n_items = n

    def encode(self, raw_ids: Iterable) -> np.ndarray:
        """Internal ids (int64) of raw ids, 0 for unknown ones."""
        values = list(raw_ids)
        if self._int_keys is not None and values and all(type(v) is int for v in values):
            codes = _search_int_keys(self._int_keys, values)
            if codes is not None:
                return codes
        values = normalise_raw_ids(values, self.raw_index)
        if not values:
            return np.empty(0, dtype=np.int64)
        return encode_items(values, self.raw_index).astype(np.int64)

    def internal_ids(self, raw_ids: Iterable) -> np.ndarray:
        """Internal ids of raw ids, unknown ones dropped (int64)."""
        codes = self.encode(raw_ids)
        return codes[codes > 0]

    def describe(self) -> dict[str, str]:
        """Which attributes rules can use, by kind (for error messages and /metadata)."""
        kinds = {name: "flag" for name in self.flags}
        if self.price is not None:
            kinds[PRICE] = "price"
        if self.category is not None:
            kinds[CATEGORY] = "category"
        return kinds


@dataclass(frozen=True)
class Filters:
    """Parsed filters (see the module docstring); ``Filters.parse`` checks keys and types."""

    in_stock: bool = False
    categories: tuple | None = None
    exclude_categories: tuple = ()
    min_price: float | None = None
    max_price: float | None = None
    exclude_items: tuple = ()
    boosts: Mapping[str, float] = field(default_factory=dict)
    boost_items: Mapping[Any, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, filters: Mapping[str, Any] | Filters | None) -> Filters:
        if filters is None:
            return cls()
        if isinstance(filters, Filters):
            return filters
        if not isinstance(filters, Mapping):
            raise FilterError("filters", f"must be an object, got {type(filters).__name__}")
        unknown = sorted(set(filters) - set(FILTER_KEYS))
        if unknown:
            raise FilterError(("filters", unknown[0]), f"unknown filter; known: {', '.join(FILTER_KEYS)}")
        values = {key: value for key, value in filters.items() if value is not None}
        categories = values.get("categories")
        return cls(
            in_stock=bool(values.get("in_stock", False)),
            categories=None if categories is None else tuple(_list(categories, "categories")),
            exclude_categories=tuple(_list(values.get("exclude_categories", ()), "exclude_categories")),
            min_price=_number(values.get("min_price"), "min_price"),
            max_price=_number(values.get("max_price"), "max_price"),
            exclude_items=tuple(_list(values.get("exclude_items", ()), "exclude_items")),
            boosts=_boosts(values.get("boosts", {}), "boosts"),
            boost_items=_boosts(values.get("boost_items", {}), "boost_items"),
        )

    @property
    def empty(self) -> bool:
        return self == Filters()


class Rules:
    """Filters compiled against one bundle's attributes, applied to candidate arrays."""

    def __init__(self, filters: Mapping[str, Any] | Filters | None, attributes: ItemAttributes) -> None:
        self.filters = spec = Filters.parse(filters)
        self.attributes = attrs = attributes
        _check_attributes(spec, attrs)
        self.include_codes = None if spec.categories is None else _codes(attrs, spec.categories)
        self.exclude_codes = _codes(attrs, spec.exclude_categories)
        self.excluded = np.unique(attrs.internal_ids(spec.exclude_items))
        codes = attrs.encode(spec.boost_items)
        values = np.fromiter(spec.boost_items.values(), dtype=np.float64, count=len(codes))
        known = codes > 0  # boosts for raw ids this catalogue lacks are ignored
        order = np.argsort(codes[known], kind="stable")
        self.boost_ids, self.boost_values = codes[known][order], values[known][order]

    @property
    def restricts(self) -> bool:
        """Whether the rules may remove candidates (so retrieval should fetch more)."""
        f = self.filters
        return bool(
            f.in_stock
            or f.categories is not None
            or f.exclude_categories
            or self.excluded.size
            or f.min_price is not None
            or f.max_price is not None
        )

    @property
    def max_boost(self) -> float:
        """The largest total boost any item can get (0 when none is positive)."""
        column = sum(max(0.0, b) for b in self.filters.boosts.values())
        item = float(self.boost_values.max()) if self.boost_values.size else 0.0
        return column + max(0.0, item)

    def apply(
        self, ids: np.ndarray, scores: np.ndarray, seen: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(eligible mask, boosted scores) for candidate internal ids and their scores; ``seen``: sorted,
        unique internal ids to exclude."""
        keep = ids > 0
        if seen is not None and seen.size:
            keep &= ~in_sorted(ids, seen)
        if self.excluded.size:
            keep &= ~np.isin(ids, self.excluded)
        keep &= self._attribute_mask(ids)
        return keep, self._boosted(ids, scores)

    def _attribute_mask(self, ids: np.ndarray) -> np.ndarray:
        f, attrs = self.filters, self.attributes
        keep = np.ones(ids.shape, dtype=bool)
        if f.in_stock:
            keep &= attrs.flags[IN_STOCK][ids]
        if self.include_codes is not None:
            keep &= np.isin(attrs.category[ids], self.include_codes)
        if self.exclude_codes.size:
            keep &= ~np.isin(attrs.category[ids], self.exclude_codes)
        if f.min_price is not None:
            keep &= attrs.price[ids] >= f.min_price  # NaN (no price) compares False
        if f.max_price is not None:
            keep &= attrs.price[ids] <= f.max_price
        return keep

    def _boosted(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if not self.filters.boosts and not self.boost_ids.size:
            return scores
        out = scores.astype(np.float64, copy=True)
        for name, boost in self.filters.boosts.items():
            out += boost * self.attributes.flags[name][ids]
        if self.boost_ids.size:
            pos = np.minimum(np.searchsorted(self.boost_ids, ids), self.boost_ids.size - 1)
            hit = self.boost_ids[pos] == ids
            out[hit] += self.boost_values[pos[hit]]
        return out.astype(np.float32)


def _search_int_keys(keys: np.ndarray, values: list[int]) -> np.ndarray | None:
    """Internal ids (position + 1, 0 when absent) of int ``values`` in the ascending ``keys``; None
    when a value does not fit in int64 (the caller's general lookup then says it is unknown)."""
    try:
        wanted = np.array(values, dtype=np.int64)
    except OverflowError:
        return None
    positions = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[positions] == wanted, positions + 1, 0).astype(np.int64)


def normalise_raw_ids(values: list, index: pd.Index) -> list:
    """Raw ids as the catalogue keys them: ints given for a string-keyed catalogue become strings."""
    if index.dtype.kind not in "iu" and any(isinstance(v, int | np.integer) for v in values):
        return [str(v) if isinstance(v, int | np.integer) else v for v in values]
    return values


def _check_attributes(spec: Filters, attrs: ItemAttributes) -> None:
    """Refuse filters on attributes this bundle's item table lacks, and empty price ranges."""
    needs = {
        "in_stock": (spec.in_stock, IN_STOCK in attrs.flags),
        "categories": (spec.categories is not None, attrs.category is not None),
        "exclude_categories": (bool(spec.exclude_categories), attrs.category is not None),
        "min_price": (spec.min_price is not None, attrs.price is not None),
        "max_price": (spec.max_price is not None, attrs.price is not None),
    }
    columns = {"in_stock": IN_STOCK, "min_price": PRICE, "max_price": PRICE}
    for key, (used, present) in needs.items():
        if used and not present:
            raise _missing(key, columns.get(key, CATEGORY), attrs)
    if spec.min_price is not None and spec.max_price is not None and spec.min_price > spec.max_price:
        raise FilterError(("filters", "min_price"), f"{spec.min_price} is above max_price {spec.max_price}")
    for name in spec.boosts:
        if name not in attrs.flags:
            known = ", ".join(sorted(attrs.flags)) or "none"
            message = f"no boolean item attribute {name!r} (boolean attributes: {known})"
            raise FilterError(("filters", "boosts", name), message)


def _padded(values: np.ndarray, pad: Any) -> np.ndarray:
    return np.concatenate([np.array([pad], dtype=values.dtype), values])


def _is_number(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _is_boolean_object(column: pd.Series) -> bool:
    if column.dtype != object:
        return False
    values = column.dropna()
    return len(values) > 0 and all(isinstance(v, bool | np.bool_) for v in values)


def _codes(attrs: ItemAttributes, categories: Iterable) -> np.ndarray:
    # a category absent from the catalogue matches nothing
    codes = [attrs.categories[str(c)] for c in categories if str(c) in attrs.categories]
    return np.asarray(codes, dtype=np.int32)


def _missing(key: str, column: str, attrs: ItemAttributes) -> FilterError:
    present = ", ".join(f"{n} ({k})" for n, k in sorted(attrs.describe().items())) or "none"
    return FilterError(
        ("filters", key), f"this bundle's item table has no {column!r} attribute (attributes: {present})"
    )


def _list(value: Any, key: str) -> list:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise FilterError(("filters", key), f"must be a list, got {type(value).__name__}")
    return list(value)


def _number(value: Any, *loc: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FilterError(("filters", *loc), f"must be a finite number, got {value!r}")
    return float(value)


def _boosts(value: Any, key: str) -> dict:
    if not isinstance(value, Mapping):
        message = f"must be an object of name -> number, got {type(value).__name__}"
        raise FilterError(("filters", key), message)
    return {name: _number(boost, key, name) for name, boost in value.items()}


def in_sorted(values: np.ndarray, sorted_unique: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_unique)`` for an already sorted, unique second array: a binary search
    per value, no sorting of either array (the seen items of a session are kept sorted)."""
    if not sorted_unique.size:
        return np.zeros(values.shape, dtype=bool)
    at = np.searchsorted(sorted_unique, values).clip(max=sorted_unique.size - 1)
    return sorted_unique[at] == values
