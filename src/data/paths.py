"""Where dataset files live: a data root from ``SHOPFORMER_DATA`` laid out like ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

from shopformer.data.schema import DataSourceNotFound

DATA_ROOT_ENV = "SHOPFORMER_DATA"
DEFAULT_DATA_ROOT = "data"


def data_root() -> Path:
    """The folder that relative dataset paths resolve under."""
    return Path(os.environ.get(DATA_ROOT_ENV, DEFAULT_DATA_ROOT)).expanduser()


def resolve_data_file(path: str | os.PathLike, how_to_get: str = "") -> Path:
    """Absolute path of a dataset file; a missing one fails saying where it looked."""
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = data_root() / candidate
    if not candidate.is_file():
        root = os.environ.get(DATA_ROOT_ENV)
        where = (
            f"data root {DATA_ROOT_ENV}={root}"
            if root
            else f"default data root '{DEFAULT_DATA_ROOT}/' ({DATA_ROOT_ENV} is not set)"
        )
        hint = f" Get it from: {how_to_get}." if how_to_get else ""
        raise DataSourceNotFound(
            f"dataset file not found: {candidate.resolve()} (looked under the {where}).{hint}"
        )
    return candidate.resolve()
