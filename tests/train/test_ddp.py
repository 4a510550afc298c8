"""Lightning's DDP with two CPU processes (gloo): sane metrics, one MLflow run, one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mlflow


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    exe = Path(sys.executable).with_name("shopformer-train")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "SHOPFORMER_MLFLOW_ARTIFACTS": str(tmp_path / "artifacts"),
        "SHOPFORMER_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    args = [
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=2",
        "data.source.n_users=600",
        "data.source.n_items=200",
        "datamodule.max_len=20",
        "model.dim=16",
        "logger.experiment_name=ddp-test",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = subprocess.run(
        [str(exe), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, result.stdout[-3000:]
    summary = json.loads(lines[0])
    assert 0.0 < summary["test"]["hr@10"] <= 1.0 and summary["test"]["hr@100"] > 0.2
    assert 0.0 < summary["test"]["in_stock@10"] <= 1.0 and summary["test"]["revenue@100"] > 0.0  # merged too
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["ddp-test"])
    assert len(runs) == 1 and runs.iloc[0]["run_id"] == summary["run_id"]
    # Both ranks' examples are merged: every test user counted once (DistributedSampler pads at most 1).
    single_args = [a for a in args if not a.startswith(("trainer", "logger"))]
    single = subprocess.run(
        [str(exe), *single_args, "trainer.max_epochs=1", "logger=none"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    n_single = json.loads([x for x in single.stdout.splitlines() if x.startswith("{")][0])["test"]["n"]
    assert n_single <= summary["test"]["n"] <= n_single + 1
