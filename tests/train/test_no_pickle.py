"""Checkpoints and dataset caches load without pickle: a file with a pickled object is refused in one
line, before anything runs it; no training run asks Lightning to unpickle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shopformer.errors import DataError
from shopformer.train.checkpoint import load_checkpoint
from shopformer.train.train import run
from tests.train.runs import compose_train

REPO = Path(__file__).resolve().parents[2]
RAN = []


class Payload:
    """What an attacker's checkpoint carries: unpickling it runs code."""

    def __reduce__(self):
        return (RAN.append, ("payload ran",))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("run")
    return run(compose_train(tmp_path, "logger=none", "trainer.max_epochs=1")), tmp_path


def _tampered(checkpoint_path: str, out: Path) -> Path:
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    checkpoint["extra"] = Payload()
    torch.save(checkpoint, out)
    return out


def test_a_checkpoint_with_a_pickled_object_is_refused(finished_run, tmp_path):
    summary, _ = finished_run
    evil = _tampered(summary["checkpoint"], tmp_path / "evil.ckpt")
    with pytest.raises(DataError) as err:
        load_checkpoint(evil)
    assert "cannot be loaded without unpickling" in str(err.value) and "\n" not in str(err.value)
    assert RAN == []


def test_resume_from_a_tampered_checkpoint_exits_with_one_line(finished_run, tmp_path):
    summary, _ = finished_run
    evil = _tampered(summary["checkpoint"], tmp_path / "evil.ckpt")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shopformer.train",
            "logger=none",
            "trainer.max_epochs=1",
            f"resume={evil}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "data.source.n_users=200",
            "export=false",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-1500:]
    lines = [line for line in done.stderr.strip().splitlines() if "evil.ckpt" in line]
    assert len(lines) == 1 and "cannot be loaded without unpickling" in lines[0]
    assert "Traceback" not in done.stderr


def test_every_checkpoint_of_a_run_loads_with_weights_only(finished_run):
    _, tmp_path = finished_run
    files = sorted((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    assert {f.name for f in files} == {"best.ckpt", "last.ckpt"}
    for file in files:
        torch.load(file, weights_only=True)  # raises on any pickled object


def test_a_dataset_cache_file_with_a_pickle_payload_is_refused(finished_run, tmp_path):
    summary, run_tmp = finished_run
    cache = next((run_tmp / "cache").iterdir())
    for victim in ("meta.json", *[p.name for p in cache.glob("*.parquet")][:1]):
        target = cache / victim
        saved = target.read_bytes()
        torch.save({"x": Payload()}, target)  # a pickle where JSON / Parquet should be
        try:
            with pytest.raises(DataError) as err:
                run(compose_train(run_tmp, "logger=none", "trainer.max_epochs=1"))
            assert victim in str(err.value) and "\n" not in str(err.value)
        finally:
            target.write_bytes(saved)
    assert RAN == []
    assert json.loads((cache / "meta.json").read_text())["config_hash"] == summary["dataset"]["hash"]
