"""Where MLflow runs are tracked by default (torch-free: ``shopformer-compare`` reads the store)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STORE = Path("mlflow")


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the sqlite database in ``mlflow/`` of the working directory."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    DEFAULT_STORE.mkdir(exist_ok=True)
    return f"sqlite:///{(DEFAULT_STORE / 'mlflow.db').resolve()}"
