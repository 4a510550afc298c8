"""TimeToTarget (when a metric first reaches its target) and EpochSummary (one line per epoch)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from shopformer.train.callbacks import EpochSummary, TimeToTarget


def test_time_to_target_records_the_first_epoch_at_target_and_can_stop(tmp_path):
    report = tmp_path / "t.json"
    timer = TimeToTarget(monitor="val/ndcg_10", target=0.2, stop=True, report=str(report))
    trainer = SimpleNamespace(callback_metrics={}, current_epoch=0, should_stop=False, is_global_zero=True)
    timer.on_fit_start(trainer, None)
    for epoch, value in enumerate([0.1, 0.15, 0.21, 0.25]):
        trainer.current_epoch, trainer.callback_metrics = epoch, {"val/ndcg_10": torch.tensor(value)}
        timer.on_train_epoch_end(trainer, None)
        if trainer.should_stop:
            break
    timer.on_train_end(trainer, None)
    facts = json.loads(report.read_text())
    assert facts["reached_epoch"] == 3 and facts["reached_s"] >= 0 and trainer.should_stop
    assert facts["best"] == pytest.approx(0.21, abs=1e-6)


def test_time_to_target_stays_none_when_never_reached():
    timer = TimeToTarget(target=0.5, mode="max")
    trainer = SimpleNamespace(callback_metrics={"val/ndcg_10": torch.tensor(0.3)}, current_epoch=0)
    timer.on_train_epoch_end(trainer, None)
    assert timer.reached_s is None and timer.reached_epoch is None
    assert timer.best == pytest.approx(0.3, abs=1e-6)


def test_an_epoch_without_validation_does_not_repeat_the_last_scores(capsys):
    summary = EpochSummary()
    metrics = {"train/loss": torch.tensor(2.5), "val/ndcg_10": torch.tensor(0.125)}
    trainer = SimpleNamespace(
        callback_metrics=metrics, current_epoch=0, is_global_zero=True, sanity_checking=False
    )
    summary.on_train_epoch_start(trainer, None)
    summary.on_validation_epoch_start(trainer, None)
    summary.on_train_epoch_end(trainer, None)
    trainer.current_epoch = 1  # max_steps ends this one before its validation
    summary.on_train_epoch_start(trainer, None)
    summary.on_train_epoch_end(trainer, None)
    first, second = capsys.readouterr().out.splitlines()
    assert first.startswith("epoch 0 |") and first.endswith("loss 2.5000 | val/ndcg_10 0.1250")
    assert second.startswith("epoch 1 |") and second.endswith("no validation") and "0.1250" not in second
