"""Kill-and-resume: a run SIGKILLed mid-epoch and started again with the same command continues from
its last checkpoint in its own directory and ends with the metrics of a run never interrupted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shopformer.train.base_module import mark_finished_epoch_completed
from shopformer.train.resume import FINISHED, comparable, newest_interrupted, resume_run_dir
from tests.train.runs import SMALL

REPO = Path(__file__).resolve().parents[2]


def _train(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "shopformer.train", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _run_dir(cwd: Path, task: str, proc: subprocess.CompletedProcess) -> Path:
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return Path(summary["checkpoint"]).parent.parent if summary.get("checkpoint") else cwd / "outputs" / task


def _killed_once(task: str, marker: Path, signal: str) -> list[str]:
    """A small 3-epoch run that gets ``signal`` at batch 2 of epoch 1 unless ``marker`` exists."""
    return [
        *SMALL,
        "trainer.max_epochs=3",
        "logger=none",
        "threads=1",
        f"task_name={task}",
        "+callbacks.killer._target_=tests.train.killer.KillOnce",
        "+callbacks.killer.epoch=1",
        "+callbacks.killer.batch=2",
        f"+callbacks.killer.marker={marker}",
        f"+callbacks.killer.signal={signal}",
    ]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param([], id="sasrec"),
        # a minute on 2 cores: under -m slow (benchmarks/reliability.py runs it too)
        pytest.param(["experiment=journey_synthetic"], id="journey_ema", marks=pytest.mark.slow),
    ],
)
def test_sigkill_mid_epoch_then_same_command_resumes_with_identical_metrics(tmp_path, extra):
    marker = tmp_path / "killed"
    task = "resume_test"
    command = [*extra, *_killed_once(task, marker, "SIGKILL")]
    if extra:  # the journey recipe on the small synthetic shop
        command = [c for c in command if not c.startswith(("datamodule.max_len", "data.source.n_items"))]
    marker.touch()  # the reference run: never killed
    reference = _train(tmp_path, *command)
    assert reference.returncode == 0, reference.stderr[-2000:]
    marker.unlink()

    killed = _train(tmp_path, *command)
    assert killed.returncode == -9, killed.stderr[-2000:]
    interrupted = newest_interrupted(tmp_path / "outputs" / task, None)
    assert interrupted is not None and not (interrupted / FINISHED).exists()
    assert torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0

    resumed = _train(tmp_path, *command)  # the same command
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {interrupted}" in resumed.stdout
    assert "exists and is not empty" not in resumed.stdout + resumed.stderr  # library noise, filtered
    want = json.loads(reference.stdout.strip().splitlines()[-1])
    got = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert Path(got["checkpoint"]).parent.parent == interrupted  # in its own directory
    assert got["epochs"] == want["epochs"] == 3
    assert got["test"].keys() == want["test"].keys()
    for name, value in want["test"].items():
        assert got["test"][name] == pytest.approx(value, abs=1e-6), name
    assert json.loads((interrupted / FINISHED).read_text())["test"] == got["test"]


def _fake_run(root: Path, name: str, overrides: list[str], finished: bool = False) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if finished:
        (run / FINISHED).write_text("{}")
    return run


def test_run_dir_choice(tmp_path):
    root = tmp_path / "outputs" / "t"
    old = _fake_run(root, "2026-01-01_00-00-00", ["model.dim=8"])
    other = _fake_run(root, "2026-01-02_00-00-00", ["model.dim=16"])
    _fake_run(root, "2026-01-03_00-00-00", ["model.dim=8"], finished=True)
    new = str(root / "2026-01-04_00-00-00")
    assert resume_run_dir(new, None) == new
    assert resume_run_dir(new, "null") == new
    assert resume_run_dir(new, "last") == str(other)  # the newest interrupted, whatever its command
    assert newest_interrupted(root, ["model.dim=8", "resume=auto"]) == old  # resume= itself may differ
    assert newest_interrupted(root, ["model.dim=8", "threads=1", "verbose=true"]) == old  # how it runs too
    assert comparable({"threads": 2, "verbose": False, "model": {"dim": 8}}) == {"model": {"dim": 8}}
    assert newest_interrupted(root, ["model.dim=32"]) is None
    assert resume_run_dir(new, str(old / "checkpoints" / "last.ckpt")) == str(old)
    assert resume_run_dir(new, str(tmp_path / "elsewhere.ckpt")) == new
    assert resume_run_dir(str(tmp_path / "nothing" / "x"), "auto") == str(tmp_path / "nothing" / "x")


def test_an_epoch_end_checkpoint_continues_with_the_next_epoch_in_step_sized_runs():
    # What Lightning restores from: epoch 0 processed (its last batch and validation done), not yet
    # counted completed, as written by ModelCheckpoint(save_last=True) at the epoch's end.
    done = {"ready": 17, "completed": 17, "started": 17, "processed": 17}
    checkpoint = {
        "loops": {
            "fit_loop": {
                "epoch_progress": {"current": {"ready": 1, "completed": 0, "started": 1, "processed": 1}},
                "epoch_loop.batch_progress": {
                    "total": dict(done),
                    "current": dict(done),
                    "is_last_batch": True,
                },
            }
        }
    }
    mark_finished_epoch_completed(checkpoint)
    fit = checkpoint["loops"]["fit_loop"]
    assert fit["epoch_progress"]["current"]["completed"] == 1
    assert fit["epoch_loop.batch_progress"]["current"] == dict.fromkeys(done, 0)
    assert (
        fit["epoch_loop.batch_progress"]["total"] == done
        and not fit["epoch_loop.batch_progress"]["is_last_batch"]
    )
    # A checkpoint from the middle of an epoch is left as it is.
    mid = {"ready": 5, "completed": 5, "started": 5, "processed": 5}
    checkpoint["loops"]["fit_loop"] = {
        "epoch_progress": {"current": {"ready": 2, "completed": 1, "started": 2, "processed": 1}},
        "epoch_loop.batch_progress": {"current": dict(mid), "is_last_batch": False},
    }
    mark_finished_epoch_completed(checkpoint)
    assert checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"] == mid


def test_sigterm_mid_epoch_exits_143_and_says_how_to_resume(tmp_path):
    """Lightning ends a SIGTERMed fit with a SystemExit of status 0; ours is 143, with one line."""
    task = "sigterm_test"
    stopped = _train(tmp_path, *_killed_once(task, tmp_path / "killed", "SIGTERM"))
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "training stopped by SIGTERM in epoch 1" in stopped.stderr
    assert "the same command resumes it from" in stopped.stderr and "last.ckpt" in stopped.stderr
    assert not stopped.stdout.strip().splitlines()[-1].startswith("{")  # no JSON line: not a result
    interrupted = newest_interrupted(tmp_path / "outputs" / task, None)
    assert interrupted is not None and not (interrupted / FINISHED).exists()


def test_last_ckpt_is_written_at_every_validation_and_keeps_the_best_so_far(tmp_path):
    """The configured checkpoint callbacks: last.ckpt follows every validation (a killed run loses at most
    one epoch), even one that is not a new best, and the best score it saves is this validation's."""
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.demos.boring_classes import BoringModel
    from omegaconf import OmegaConf

    from shopformer.train.config import CONF_DIR

    callbacks = OmegaConf.create({"callbacks": OmegaConf.load(CONF_DIR / "callbacks" / "default.yaml")})
    callbacks = callbacks.callbacks
    callbacks.model_checkpoint.dirpath = str(tmp_path)
    scores = [0.3, 0.1, 0.2]  # the best is the first

    class Scored(BoringModel):
        def on_validation_epoch_end(self) -> None:
            self.log("val/ndcg_10", scores[self.current_epoch])

    savers = [instantiate(callbacks.model_checkpoint), instantiate(callbacks.last_checkpoint)]
    trainer = L.Trainer(
        max_epochs=3, callbacks=savers, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(Scored())
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and torch.load(tmp_path / "best.ckpt", weights_only=True)["epoch"] == 0
    (best_state,) = [v for k, v in last["callbacks"].items() if "val/ndcg_10" in k]
    assert float(best_state["best_model_score"]) == pytest.approx(0.3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]
