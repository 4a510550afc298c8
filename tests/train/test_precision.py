"""precision=auto: the faster of fp32 and bf16 autocast, chosen by timing real steps, leaving no trace."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from shopformer.models.losses import FullCrossEntropy
from shopformer.models.sasrec import SASRec
from shopformer.train import precision as precision_module
from shopformer.train.module import RecommenderModule
from shopformer.train.precision import BF16, FP32, probe, resolve_precision
from shopformer.train.train import run
from tests.train.runs import compose_train


def batches(n: int = 4, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        items = torch.randint(1, 50, (8, 10), generator=gen)
        out.append({"item_ids": items, "targets": torch.roll(items, -1, dims=1)})
    return out


def module() -> RecommenderModule:
    torch.manual_seed(0)
    return RecommenderModule(SASRec(n_items=50, dim=8, max_len=10, dropout=0.3), FullCrossEntropy())


def test_the_probe_leaves_weights_gradients_and_random_generators_as_they_were():
    m = module()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    choice = probe(m, batches())
    assert choice.chosen in (FP32, BF16) and choice.fp32_ms > 0 and choice.bf16_ms > 0
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert all(p.grad is None for p in m.parameters())
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]


@pytest.mark.parametrize(("bf16_s", "chosen"), [(0.5, BF16), (0.95, FP32), (2.0, FP32)])
def test_bf16_is_chosen_only_when_clearly_faster(monkeypatch, bf16_s, chosen):
    monkeypatch.setattr(precision_module, "_timed_step", lambda m, b, bf16: bf16_s if bf16 else 1.0)
    choice = probe(module(), batches())
    assert choice.chosen == chosen and choice.fp32_ms == 1000.0 and choice.bf16_ms == bf16_s * 1000


@pytest.mark.parametrize(("bf16_s", "steps"), [(13.0, 2), (0.2, 2), (0.9, 6)])
def test_a_clear_winner_ends_the_probe_after_one_warm_step(monkeypatch, bf16_s, steps):
    timed: list[bool] = []

    def fake(m, b, bf16):
        timed.append(bf16)
        return bf16_s if bf16 else 1.0

    monkeypatch.setattr(precision_module, "_timed_step", fake)
    choice = probe(module(), batches(n=8), steps=5)
    assert timed.count(True) == timed.count(False) == steps  # all 6 batches when it is close
    assert choice.chosen == (BF16 if bf16_s < 1 / precision_module.MIN_GAIN else FP32)


def test_configured_precisions_and_several_processes_are_not_probed(monkeypatch):
    monkeypatch.setattr(precision_module, "probe", lambda *a, **k: pytest.fail("probed"))
    assert resolve_precision("bf16-mixed", "cpu", None, []).chosen == "bf16-mixed"
    assert resolve_precision("auto", "cpu", None, [], processes=2).chosen == FP32


def test_an_auto_run_that_picks_fp32_is_the_32_true_run(tmp_path, monkeypatch):
    fixed = run(compose_train(tmp_path / "fixed", "model.dim=16", "logger=none", "trainer.max_epochs=1"))
    monkeypatch.setattr(precision_module, "MIN_GAIN", 1e9)  # fp32 whatever the timings
    auto = run(
        compose_train(
            tmp_path / "auto", "model.dim=16", "logger=none", "trainer.max_epochs=1", "trainer.precision=auto"
        )
    )
    assert fixed["precision"] == auto["precision"] == FP32
    assert auto["test"] == fixed["test"]  # the probe's steps changed nothing
