"""TimeToTarget: when a monitored metric first reaches its target, written where asked."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from shopformer.train.callbacks import TimeToTarget


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
