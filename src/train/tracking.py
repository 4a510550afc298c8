"""MLflow glue: the default local store, run tags, and artifacts of a finished run."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from shopformer.provenance import processor
from shopformer.serve.bundle import read_manifest, write_manifest
from shopformer.train.resilient_logger import ResilientMLFlowLogger, TrackingOff, fail_fast_http, say_failed
from shopformer.train.tracking_uri import DEFAULT_STORE, default_tracking_uri

if TYPE_CHECKING:  # mlflow costs ~1.3 s to import; only runs that log need it
    from mlflow import MlflowClient

BUNDLE_ARTIFACT = "bundle"


def mlflow_logger(
    experiment_name: str = "shopformer",
    run_name: str | None = None,
    tracking_uri: str | None = None,
    artifact_dir: str | None = None,
    run_id: str | None = None,
) -> ResilientMLFlowLogger | TrackingOff:
    """Lightning's MLFlowLogger with an explicit artifact location (sqlite stores else use ./mlruns),
    connected now: when the store cannot be reached or written, ``failed`` says why (said once) and
    the run goes on untracked. ``run_id``: log into that existing run (a sweep's trial run) instead of
    a new one."""
    fail_fast_http()
    artifacts = Path(
        artifact_dir or os.environ.get("SHOPFORMER_MLFLOW_ARTIFACTS", DEFAULT_STORE / "artifacts")
    )
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or str(DEFAULT_STORE)
    try:
        artifacts.mkdir(parents=True, exist_ok=True)
        uri = tracking_uri or default_tracking_uri()
        logger = ResilientMLFlowLogger(  # opens the store (an sqlite one creates its tables)
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=uri,
            artifact_location=artifacts.resolve().as_uri(),
            run_id=run_id,
        )
    except Exception as exc:  # any failure of the store: permissions, locks, a broken database
        return TrackingOff(say_failed(uri, "opening the store", exc))
    return logger.connect()


PACKAGES = (
    "torch",
    "lightning",
    "numpy",
    "pandas",
    "pyarrow",
    "hydra-core",
    "mlflow",
    "onnx",
    "onnxruntime",
    "faiss-cpu",
)


def environment() -> dict[str, str]:
    """Python, platform, processor and the versions of the packages a run's numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "platform": platform.platform(), "processor": processor()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def publish_bundle(
    client: MlflowClient,
    run_id: str,
    directory: str | os.PathLike,
    *,
    register: bool = True,
    name: str | None = None,
    alias: str | None = None,
) -> dict[str, Any] | None:
    """Log ``directory`` as the run artifact ``bundle``; with ``register``, a model version of it.

    The version's source is ``runs:/<run_id>/bundle``, so ``models:/<name>/<version>`` (and
    ``models:/<name>@<alias>``) download the bundle directory itself. The version is created
    first and written into the manifest (name and version) before the upload; if the upload
    fails, the version is deleted again. Returns ``{name, version, uri, alias}`` or None.
    """
    source = f"runs:/{run_id}/{BUNDLE_ARTIFACT}"
    version = _create_version(client, name, source, run_id) if register else None
    try:
        if version is not None:
            manifest = read_manifest(directory)
            write_manifest(directory, {**manifest, "name": name, "version": str(version.version)})
        client.log_artifacts(run_id, str(directory), BUNDLE_ARTIFACT)
    except BaseException:
        if version is not None:
            client.delete_model_version(name, version.version)
        raise
    client.set_tag(run_id, "bundle", source)
    if version is None:
        return None
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    client.set_tag(run_id, "registered_model", f"{name}/{version.version}")
    return {
        "name": name,
        "version": str(version.version),
        "uri": f"models:/{name}/{version.version}",
        "alias": alias,
    }


def _create_version(client: MlflowClient, name: str | None, source: str, run_id: str):
    from mlflow.exceptions import MlflowException

    if not name:
        raise ValueError("registering a bundle needs a registered model name")
    try:
        client.create_registered_model(name, description="shopformer serving bundles (src/serve/bundle.py)")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return client.create_model_version(name, source, run_id=run_id)


def log_run_facts(logger: Any, cfg: Any, dm: Any, ckpt: str | None, commit: str) -> None:
    """Tags (dataset, its hash, commit, model class), the resolved config, the dataset report and the
    checkpoint of a finished run."""
    client, run_id = logger.experiment, logger.run_id
    client.set_tag(run_id, "dataset", dm.data.meta["name"])
    client.set_tag(run_id, "dataset_hash", dm.data.meta["config_hash"])
    client.set_tag(run_id, "git_commit", commit)
    client.set_tag(run_id, "model", cfg.model._target_.rsplit(".", 1)[-1])
    client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    client.log_dict(run_id, dm.data.meta["report"], "dataset_report.json")
    versions = environment()
    client.log_dict(run_id, versions, "environment.json")
    for name in ("python", "torch", "lightning", "numpy"):
        client.set_tag(run_id, f"version.{name}", versions[name])
    if ckpt:
        client.log_artifact(run_id, ckpt, "checkpoints")
