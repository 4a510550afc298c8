"""Test-wide settings: one thread (the CI box is shared), the real datasets in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHOPFORMER_DATA", REPO.parent / "shared" / "data")).resolve()
os.environ["SHOPFORMER_DATA"] = str(SHARED_DATA)
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real public datasets (never copied into the repo)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set SHOPFORMER_DATA)")
    return SHARED_DATA
