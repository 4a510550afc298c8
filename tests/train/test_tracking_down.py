"""Training completes when the MLflow store is unreachable, locked, read-only or broken, at start or
mid-run: it says so once, and the metrics are in the summary (JSON line and summary.json)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from shopformer.train.resume import FINISHED
from shopformer.train.train import run
from tests.train.runs import compose_train


def _train(tmp_path: Path, uri: str, *overrides: str) -> dict:
    cfg = compose_train(
        tmp_path,
        "logger=mlflow",
        f"logger.tracking_uri='{uri}'",
        f"logger.artifact_dir={tmp_path / 'artifacts'}",
        "registry.register=true",
        "export=true",
        *overrides,
    )
    return run(cfg)


def _check_completed(summary: dict, tmp_path: Path, err: str) -> None:
    assert summary["test"]["hr@10"] > 0
    assert summary["tracking"].startswith("failed:")
    assert err.count("tracking failed") == 1, err  # said once
    assert Path(summary["bundle"]).is_dir()  # exported anyway, only not published
    assert json.loads((tmp_path / "run" / FINISHED).read_text())["test"] == summary["test"]


def test_store_unreachable_at_start(tmp_path, capfd):
    summary = _train(tmp_path, "http://127.0.0.1:9")  # nothing listens on the discard port
    _check_completed(summary, tmp_path, capfd.readouterr().err)
    assert summary["run_id"] is None


def test_store_broken_mid_run(tmp_path, capfd):
    db = tmp_path / "m.db"
    summary = _train(
        tmp_path,
        f"sqlite:///{db}",
        "+callbacks.breaker._target_=tests.train.faults.BreakStore",
        f"+callbacks.breaker.path={db}",
    )
    _check_completed(summary, tmp_path, capfd.readouterr().err)


def test_store_read_only_at_start(tmp_path, capfd):
    db = tmp_path / "m.db"
    sqlite3.connect(db).close()  # an empty database file, opened read-only: no tables can be made
    summary = _train(tmp_path, f"sqlite:///file:{db}?mode=ro&uri=true")
    _check_completed(summary, tmp_path, capfd.readouterr().err)


@pytest.mark.slow  # a locked sqlite store answers after MLflow's 20-second busy timeout
def test_store_locked_mid_run(tmp_path, capfd):
    db = tmp_path / "m.db"
    summary = _train(
        tmp_path,
        f"sqlite:///{db}",
        "+callbacks.locker._target_=tests.train.faults.LockStore",
        f"+callbacks.locker.path={db}",
    )
    _check_completed(summary, tmp_path, capfd.readouterr().err)


@pytest.mark.slow
def test_store_locked_at_start(tmp_path, capfd):
    db = tmp_path / "m.db"
    sqlite3.connect(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the store for the whole run
    try:
        summary = _train(tmp_path, f"sqlite:///{db}")
    finally:
        holder.close()
    _check_completed(summary, tmp_path, capfd.readouterr().err)
