"""Slow: on the synthetic data SASRec beats most-popular and the transition baseline (NDCG@10, test)."""

from __future__ import annotations

import pytest

from tests.train.test_train import compose_train
from shopformer.train.train import run


@pytest.mark.slow
def test_sasrec_beats_baselines_on_synthetic(tmp_path):
    base = ["data.source.n_users=6000", "data.source.n_items=3000", "datamodule.max_len=50",
            "datamodule.batch_size=128", "logger=none"]
    results = {
        model: run(compose_train(tmp_path / model, f"model={model}", *base))["test"]
        for model in ("popularity", "transition")
    }
    results["sasrec"] = run(compose_train(tmp_path / "sasrec", "model=sasrec", *base, "trainer.max_epochs=20"))[
        "test"
    ]
    print({m: round(r["ndcg@10"], 4) for m, r in results.items()})
    assert results["sasrec"]["ndcg@10"] > results["transition"]["ndcg@10"] > 2 * results["popularity"]["ndcg@10"]
