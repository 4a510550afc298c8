"""One MLflow sqlite store per test session (a new database costs seconds of migrations), and one
tracked SASRec run (with its exported, registered bundle) shared by the training and export tests."""

from __future__ import annotations

import pytest

from shopformer.train.train import run
from tests.train.runs import compose_train


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setenv("SHOPFORMER_MLFLOW_ARTIFACTS", str(root / "artifacts"))
    yield uri
    mp.undo()


@pytest.fixture(scope="session")
def sasrec_run(tmp_path_factory, mlflow_store):
    tmp_path = tmp_path_factory.mktemp("sasrec")
    cfg = compose_train(tmp_path, "model.dim=16", "export=true", "registry.alias=champion")
    return run(cfg), tmp_path
