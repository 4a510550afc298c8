"""The learning-rate schedule: warm-up, constant phase, cosine decay (warmup-stable-decay)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from shopformer.errors import ConfigError
from shopformer.train.schedule import lr_factor


def test_warmup_is_linear_then_constant_without_cosine():
    assert [lr_factor(s, 100, warmup_steps=4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(99, 100, warmup_steps=4) == 1.0


def test_cosine_from_the_end_of_warmup_by_default():
    total, warmup, floor = 110, 10, 0.1
    assert lr_factor(10, total, warmup, cosine=True, min_lr_ratio=floor) == pytest.approx(1.0)
    halfway = lr_factor(60, total, warmup, cosine=True, min_lr_ratio=floor)
    assert halfway == pytest.approx(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(110, total, warmup, cosine=True, min_lr_ratio=floor) == pytest.approx(floor)


def test_decay_start_holds_the_peak_then_decays_over_the_rest():
    total = 200
    factors = [
        lr_factor(s, total, cosine=True, min_lr_ratio=0.01, decay_start=0.75) for s in range(total + 1)
    ]
    assert all(f == 1.0 for f in factors[:150])
    tail = factors[150:]
    assert all(a > b for a, b in zip(tail, tail[1:], strict=False))  # strictly decreasing to the floor
    assert factors[175] == pytest.approx(0.01 + 0.99 * 0.5)
    assert factors[200] == pytest.approx(0.01)


def test_decay_start_never_cuts_the_warmup_short():
    assert lr_factor(5, 100, warmup_steps=20, cosine=True, decay_start=0.1) == pytest.approx(6 / 20)
    assert lr_factor(20, 100, warmup_steps=20, cosine=True, decay_start=0.1) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_bad_decay_start_is_named(bad):
    with pytest.raises(ConfigError, match="schedule.decay_start"):
        lr_factor(0, 100, cosine=True, decay_start=bad)


def test_bad_decay_start_is_a_one_line_error_before_training(tmp_path, capsys, monkeypatch):
    from shopformer.train.train import main

    argv = ["shopformer-train", f"hydra.run.dir={tmp_path}", "logger=none", "schedule.decay_start=1.5"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: schedule.decay_start must be in [0, 1) (a fraction of training), got 1.5"


def test_module_schedule_follows_the_trainers_global_step():
    """A run resumed from a checkpoint saved without a scheduler (constant lr) has a fresh scheduler whose
    own count starts at 0; the decay must still happen at the trainer's step."""
    from types import SimpleNamespace

    from shopformer.models.sasrec import SASRec
    from shopformer.train.module import RecommenderModule
    from shopformer.train.schedule import LRSchedule

    module = RecommenderModule(
        SASRec(n_items=20, dim=8, max_len=5),
        None,
        optimizer=partial(torch.optim.AdamW, lr=1e-2),
        schedule=LRSchedule(cosine=True, min_lr_ratio=0.0, decay_start=0.5),
    )
    trainer = SimpleNamespace(estimated_stepping_batches=100, global_step=90)  # resumed near the end
    module._trainer = trainer
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    optimizer.step()  # no gradients: a no-op, keeps the call order torch expects
    scheduler.step()  # the scheduler's own count is 1, the run's step 90
    expected = 1e-2 * lr_factor(90, 100, cosine=True, decay_start=0.5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    assert expected < 0.1e-2
    trainer.global_step = 100
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
