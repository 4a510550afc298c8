"""The fold and seed arithmetic of ``benchmarks/journey_cv.py`` (the sweep itself is run by hand)."""

from __future__ import annotations

import pytest

from tests.benchmarks.scripts import load_benchmark


def _summary(model_auc: float, logreg_auc: float, sd: float, positives: int) -> dict:
    metrics = {"conversion_pr_auc": 0.1, "next_event_macro_f1": 0.3, "abandonment_roc_auc": 0.6}
    lead = {
        "conversion_roc_auc": {
            "delta": model_auc - logreg_auc,
            "sd": sd,
            "low": model_auc - logreg_auc - 2 * sd,
            "high": model_auc - logreg_auc + 2 * sd,
            "resamples": 100,
        },
        "next_event_macro_f1": {"delta": 0.0, "sd": sd, "low": -2 * sd, "high": 2 * sd, "resamples": 100},
    }
    return {
        "test": {"conversion_roc_auc": model_auc, **metrics},
        "valid": {"conversion_roc_auc": model_auc - 0.01, "loss": 0.5, **metrics},
        "baselines": {"logreg": {"conversion_roc_auc": logreg_auc, **metrics}},
        "lead": {"logreg": lead},
        "examples": {"test": {"next_event": 10, "conversion": 100, "conversion_positives": positives}},
    }


def test_folds_are_averaged_per_seed_and_their_leads_combined_as_independent():
    bench = load_benchmark("journey_cv")
    runs = {
        (0, 0): _summary(0.70, 0.60, 0.02, 5),
        (1, 0): _summary(0.64, 0.60, 0.02, 7),
        (0, 1): _summary(0.72, 0.60, 0.02, 5),
        (1, 1): _summary(0.66, 0.60, 0.02, 7),
    }
    result = bench.combine(runs)
    assert result["model"]["conversion_roc_auc"] == pytest.approx([0.67, 0.69])
    assert result["valid"]["conversion_roc_auc"] == pytest.approx([0.66, 0.68])
    assert result["baselines"]["logreg"]["conversion_roc_auc"] == pytest.approx(0.60)
    seed0 = result["leads"]["logreg"]["conversion_roc_auc"][0]
    assert seed0.delta == pytest.approx(0.07)
    assert seed0.sd == pytest.approx(0.02 / 2**0.5)  # two disjoint test blocks
    assert result["counts"]["conversion_positives"] == 12
    table = bench.report(result)
    assert "| logreg | conversion_roc_auc | +0.0700 / +0.0900 | 0.0141 |" in table
    # a lead over 0.0141 (the seed spread) with an interval above 0 holds; a zero lead does not
    rows = [line for line in table.splitlines() if line.startswith(("| logreg | conv", "| logreg | next"))]
    assert rows[0].endswith("| yes |") and rows[1].endswith("| no |")


def test_a_missing_run_is_named():
    bench = load_benchmark("journey_cv")
    runs = {(0, 0): _summary(0.7, 0.6, 0.02, 5), (1, 0): _summary(0.7, 0.6, 0.02, 5)}
    runs[(0, 1)] = runs[(0, 0)]
    with pytest.raises(ValueError, match=r"\(1, 1\)"):
        bench.combine(runs)


def test_each_run_trains_its_own_fold_without_tracking_or_export():
    bench = load_benchmark("journey_cv")
    command = bench.train_command("journey_taobao", 5, 3, 2, 1, ["model.dim=16"])
    assert command[0].endswith("shopformer-train")
    assert {"datamodule.split.folds=5", "datamodule.split.fold=3", "seed=2", "export=false"} <= set(command)
    assert command[-1] == "model.dim=16"
