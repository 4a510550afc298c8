"""Loading bundles from MLflow: a run's artifact (runs:/) and a registered version (models:/)."""

from __future__ import annotations

import pytest

from shopformer.serve.bundle import BundleError
from shopformer.serve.recommender import Recommender

# MLflow's sqlite store warns about a SQLAlchemy loader option it uses; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*")


@pytest.fixture(scope="module")
def logged_bundle(bundle, tmp_path_factory):
    """The plain test bundle logged as artifact ``bundle`` of a run and registered as ``handmade``."""
    mlflow = pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'm.db'}")  # one store for this module's tests
    mlflow.set_tracking_uri(f"sqlite:///{root / 'm.db'}")
    experiment = mlflow.create_experiment("serve-tests", artifact_location=(root / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(bundle.path), artifact_path="bundle")
    client = MlflowClient()
    client.create_registered_model("handmade")
    version = client.create_model_version(
        "handmade", source=f"{run.info.artifact_uri}/bundle", run_id=run.info.run_id
    )
    client.set_registered_model_alias("handmade", "champion", version.version)
    yield run.info.run_id, version.version
    mlflow.set_tracking_uri(None)
    mp.undo()


def _same_answers(rec: Recommender, reference: Recommender, history: list) -> None:
    assert rec.recommend(history, k=5).items == reference.recommend(history, k=5).items


def test_runs_uri_loads_the_logged_bundle(logged_bundle, bundle, recommender, tmp_path):
    run_id, _ = logged_bundle
    rec = Recommender.load(f"runs:/{run_id}/bundle", cache_dir=tmp_path)
    assert rec.source == f"runs:/{run_id}/bundle"
    _same_answers(rec, recommender, bundle.raw_ids[[3, 8]].tolist())


@pytest.mark.parametrize("reference", ["version", "@champion"])
def test_models_uri_loads_a_registered_version(logged_bundle, bundle, recommender, reference):
    _, version = logged_bundle
    uri = f"models:/handmade/{version}" if reference == "version" else "models:/handmade@champion"
    rec = Recommender.load(uri)  # downloaded into a temporary directory, removed after loading
    assert rec.name == "handmade"
    _same_answers(rec, recommender, bundle.raw_ids[[3, 8]].tolist())


def test_unknown_mlflow_source_is_a_bundle_error(logged_bundle):
    with pytest.raises(BundleError, match="cannot download from MLflow"):
        Recommender.load("models:/no-such-model@champion")


def test_project_store_is_the_default_when_nothing_is_set(tmp_path, monkeypatch):
    import mlflow
    from shopformer.serve.mlflow_source import project_store_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)
    assert project_store_uri(mlflow) is None  # no mlflow/mlflow.db here: MLflow decides
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "mlflow.db").touch()
    assert project_store_uri(mlflow) == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert project_store_uri(mlflow) is None
