"""Slow: on the synthetic data SASRec beats most-popular and the transition baseline (NDCG@10, test)."""

from __future__ import annotations

import pytest

from shopformer.train.train import run
from tests.train.runs import compose_train


@pytest.mark.slow
def test_sasrec_beats_baselines_on_synthetic(tmp_path):
    base = [
        "data.source.n_users=6000",
        "data.source.n_items=3000",
        "datamodule.max_len=50",
        "datamodule.batch_size=128",
        "logger=none",
    ]
    results = {
        model: run(compose_train(tmp_path / model, f"model={model}", *base))["test"]
        for model in ("popularity", "transition")
    }
    sasrec = compose_train(tmp_path / "sasrec", "model=sasrec", *base, "trainer.max_epochs=20")
    results["sasrec"] = run(sasrec)["test"]
    print({m: round(r["ndcg@10"], 4) for m, r in results.items()})
    ndcg = {m: r["ndcg@10"] for m, r in results.items()}
    assert ndcg["sasrec"] > ndcg["transition"] > 2 * ndcg["popularity"]
