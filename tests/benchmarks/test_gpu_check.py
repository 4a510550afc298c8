"""The prepared GPU check runs every step on the CPU at tiny size (its --dry-run), so it is known to work
before a GPU is at hand; and what travels to the GPU machine fits the 64 MiB the device tool carries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STEPS = {"cuda_tests", "throughput", "train_to_quality", "export_parity", "million_items"}
TRAVEL_LIMIT = 64 << 20


@pytest.mark.slow  # 30 s; run it (`make test-slow`) before a session that has a GPU
def test_dry_run_runs_every_step_and_writes_the_report(tmp_path):
    command = [sys.executable, "benchmarks/gpu/check.py", "--dry-run", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["dry_run"] and set(report["steps"]) == STEPS
    assert {name: step["status"] for name, step in report["steps"].items()} == dict.fromkeys(STEPS, "ok")
    steps = report["steps"]
    assert set(steps["throughput"]["variants"]) == {"fp32", "bf16"}
    assert steps["train_to_quality"]["epochs"] == 2 and steps["train_to_quality"]["epoch_at_val_target"] == 1
    assert steps["export_parity"]["parity_max_abs_diff"] < 1e-3
    assert steps["million_items"]["train_seq_s"] > 0 and steps["million_items"]["eval_hr100"] > 0
    assert "| export_parity | ok |" in (tmp_path / "report.md").read_text()


def test_what_travels_to_the_gpu_machine_fits():
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True).stdout
    files = [REPO / name for name in tracked.split("\0") if name]
    size = sum(path.stat().st_size for path in files if path.is_file())
    carried = REPO / ".gpu"  # made by benchmarks/gpu/fetch.sh; absent on a fresh clone
    if carried.is_dir():
        size += sum(p.stat().st_size for p in carried.rglob("*") if p.is_file())
    assert size < TRAVEL_LIMIT, f"{size / 2**20:.1f} MiB would travel"
