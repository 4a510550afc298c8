"""Bundle sources: a directory, ``runs:/<run_id>/<path>`` or ``models:/<name>/<version>`` /
``models:/<name>@<alias>``; MLflow is imported only for the last two, which are downloaded first."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shopformer.serve.bundle import BundleError

MLFLOW_SCHEMES = ("runs:/", "models:/")
PROJECT_STORE = "mlflow/mlflow.db"  # training's default tracking store, relative to the working directory


@contextlib.contextmanager
def local_bundle(source: str, cache_dir: str | os.PathLike | None = None) -> Iterator[str | Path]:
    """The bundle directory of ``source`` while the block runs: the source itself, or its MLflow
    download (into ``cache_dir``, else into a temporary directory removed afterwards)."""
    if not source.startswith(MLFLOW_SCHEMES):
        yield source
    elif cache_dir is not None:
        yield download(source, cache_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="shopformer-bundle-") as tmp:
            yield download(source, tmp)


def download(source: str, directory: str | os.PathLike) -> Path:
    """Download an MLflow ``runs:/`` or ``models:/`` bundle into ``directory``; the local path."""
    import mlflow  # imported only here: 1.3 s, and only MLflow sources need it

    Path(directory).mkdir(parents=True, exist_ok=True)
    target = tempfile.mkdtemp(prefix="bundle-", dir=directory)
    store = project_store_uri(mlflow)
    try:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=target, tracking_uri=store, registry_uri=store
        )
    except Exception as exc:  # MLflow raises many types (MlflowException, OSError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"bundle {source}: cannot download from MLflow ({first})") from None
    return Path(path)


def project_store_uri(mlflow: Any) -> str | None:
    """Training's default store (``mlflow/mlflow.db`` under the working directory, as in
    ``shopformer.train.tracking``) when no tracking URI is set and that database exists; else None
    (MLflow's own resolution)."""
    utils = getattr(getattr(mlflow.tracking, "_tracking_service", None), "utils", None)
    is_set = getattr(utils, "is_tracking_uri_set", None)  # also sees mlflow.set_tracking_uri()
    explicit = is_set() if callable(is_set) else bool(os.environ.get("MLFLOW_TRACKING_URI"))
    database = Path(PROJECT_STORE)
    return None if explicit or not database.is_file() else f"sqlite:///{database.resolve()}"
