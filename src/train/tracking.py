"""MLflow glue: the default local store, run tags, and artifacts of a finished run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lightning.pytorch.loggers import MLFlowLogger

DEFAULT_STORE = Path("mlflow")


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the sqlite database in ``mlflow/`` of the working directory."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    DEFAULT_STORE.mkdir(exist_ok=True)
    return f"sqlite:///{(DEFAULT_STORE / 'mlflow.db').resolve()}"


def mlflow_logger(
    experiment_name: str = "shopformer",
    run_name: str | None = None,
    tracking_uri: str | None = None,
    artifact_dir: str | None = None,
) -> MLFlowLogger:
    """Lightning's MLFlowLogger with an explicit artifact location (sqlite stores else use ./mlruns)."""
    artifacts = Path(
        artifact_dir or os.environ.get("SHOPFORMER_MLFLOW_ARTIFACTS", DEFAULT_STORE / "artifacts")
    )
    artifacts.mkdir(parents=True, exist_ok=True)
    return MLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name,
        tracking_uri=tracking_uri or default_tracking_uri(),
        artifact_location=artifacts.resolve().as_uri(),
    )


def git_commit() -> str:
    """The commit of the working tree (with ``-dirty`` when it has changes), or ``unknown``."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha
