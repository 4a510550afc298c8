"""One MLflow sqlite store per test session (a new database costs seconds of migrations)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setenv("SHOPFORMER_MLFLOW_ARTIFACTS", str(root / "artifacts"))
    yield uri
    mp.undo()
