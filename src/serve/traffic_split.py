"""A/B traffic split: each visitor goes to one arm, always the same, by a stable hash of its id.

The unit is the request's ``user_id``, else its ``session_id``, else its request id (then each request
is a unit of its own, and a visitor may see both arms: the service says so in its log). The hash is
SHA-256 of ``salt``, a NUL and the unit's text, read as a number in [0, 1): independent of the process,
the machine and the order of requests, so every worker and every restart agrees.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shopformer.errors import ConfigError

DEFAULT_SALT = "shopformer-ab"


def parse_split(text: str, n_arms: int) -> tuple[float, ...]:
    """``"50/50"`` (or ``"90/10"``, ``"1/1"``) as shares that sum to one, one per arm."""
    parts = str(text).split("/")
    try:
        weights = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"ab.split: {text!r} is not numbers separated by '/', e.g. 50/50") from None
    if len(weights) != n_arms:
        raise ConfigError(f"ab.split: {text!r} has {len(weights)} shares for {n_arms} arms")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"ab.split: {text!r} needs non-negative shares with a positive sum")
    total = sum(weights)
    return tuple(w / total for w in weights)


@dataclass(frozen=True)
class TrafficSplit:
    """Arms with their shares; :meth:`arm` maps a unit id to one of them."""

    names: tuple[str, ...]
    shares: tuple[float, ...]
    salt: str = DEFAULT_SALT

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shares) or len(set(self.names)) != len(self.names):
            raise ConfigError(f"ab: arm names {self.names} must be distinct, one per share")

    @classmethod
    def of(cls, names: Sequence[str], split: str, salt: str = DEFAULT_SALT) -> TrafficSplit:
        return cls(tuple(names), parse_split(split, len(names)), salt)

    def position(self, unit: Any) -> float:
        """The unit's place in [0, 1)."""
        digest = hashlib.sha256(f"{self.salt}\x00{unit}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64

    def arm(self, unit: Any) -> int:
        """Index of the arm this unit belongs to."""
        edges, total = [], 0.0
        for share in self.shares[:-1]:
            total += share
            edges.append(total)
        return bisect.bisect_right(edges, self.position(unit))
