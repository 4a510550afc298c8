"""One MLflow sqlite store per test session (a new database costs seconds of migrations), and one
tracked SASRec run (with its exported, registered bundle) shared by the training and export tests, and
three small runs shared by the comparison and plot tests."""

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


@pytest.fixture(scope="session")
def compared_runs(tmp_path_factory, mlflow_store):
    """Summaries of three tracked runs in the experiment ``compare``, on one cached dataset: SASRec
    (full_ce), SASRec with loss=bce and model.dropout=0.1, and the popularity baseline."""
    root = tmp_path_factory.mktemp("compared")
    common = ["data.source.n_users=300", f"paths.cache_dir={root}/cache", "logger.experiment_name=compare"]
    return (
        run(compose_train(root / "a", *common, "model.dim=16")),
        run(compose_train(root / "b", *common, "model.dim=16", "loss=bce", "model.dropout=0.1")),
        run(compose_train(root / "popularity", *common, "model=popularity")),
    )
