"""``benchmarks/journey_decisions.py``: it rebuilds a run from its checkpoint and finds the run's own
next-event figures again; the mixture and the departure counts on hand-made cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shopformer.data.journey.labels import IGNORE
from shopformer.train.train import run
from tests.benchmarks.scripts import load_benchmark
from tests.train.runs import compose_train


def test_mixture_runs_from_the_baseline_to_the_model():
    bench = load_benchmark("journey_decisions")
    base = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    model = np.array([[0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    assert bench.geometric_mixture(base, model, 0.0) == pytest.approx(base)
    assert bench.geometric_mixture(base, model, 1.0) == pytest.approx(model)
    half = bench.geometric_mixture(base, model, 0.5)
    assert half.sum(axis=1) == pytest.approx([1.0, 1.0])
    expected = np.sqrt(base[0] * model[0])
    assert half[0] == pytest.approx(expected / expected.sum())


def test_departures_count_only_labelled_prefixes_where_decisions_differ():
    bench = load_benchmark("journey_decisions")
    model = np.array([0, 1, 2, 2, 1])
    base = np.array([0, 0, 0, 2, 0])
    labels = np.array([0, 1, 0, 2, IGNORE])
    d = bench.departures(model, base, labels)
    assert d["share"] == pytest.approx(2 / 4)  # prefixes 1 and 2; the unlabelled one does not count
    assert d["model_right"] == pytest.approx(0.5) and d["base_right"] == pytest.approx(0.5)
    assert bench.departures(base, base, labels)["share"] == 0.0


def test_a_folder_without_runs_is_named(tmp_path):
    bench = load_benchmark("journey_decisions")
    with pytest.raises(ValueError, match="no fold<k>_seed<s>.json"):
        bench.read_runs(tmp_path)
    (tmp_path / "fold0_seed0.json").write_text(json.dumps({"test": {}}))
    with pytest.raises(ValueError, match="fold0_seed0.json: no 'checkpoint'"):
        bench.read_runs(tmp_path)


def test_a_run_scored_again_from_its_checkpoint_gives_the_runs_own_figures(tmp_path):
    bench = load_benchmark("journey_decisions")
    cfg = compose_train(
        tmp_path,
        "experiment=journey_synthetic",
        "model.dim=16",
        "task.bootstrap_resamples=0",
        "task.baselines=[markov]",
        "logger=none",
    )
    summary = run(cfg)
    (tmp_path / "fold0_seed0.json").write_text(json.dumps(summary))
    runs = bench.read_runs(tmp_path)
    assert runs == {(0, 0): summary["checkpoint"]}
    scored = bench.score_run(runs[0, 0], "markov")
    row = bench.run_row(scored)
    assert row["model"]["f1"] == pytest.approx(summary["test"]["next_event_macro_f1"], abs=1e-5)
    assert row["model"]["log_loss"] == pytest.approx(summary["test"]["next_event_log_loss"], abs=1e-5)
    markov = summary["baselines"]["markov"]
    assert row["base"]["f1"] == pytest.approx(markov["next_event_macro_f1"], abs=1e-5)
    assert row["model"]["oracle_f1"] >= row["model"]["f1"]
    # w = 1 is the model itself, w = 0 the baseline
    assert row["mixture"][1.0][1] == pytest.approx(row["model"]["f1"], abs=1e-9)
    assert row["mixture"][0.0][1] == pytest.approx(row["base"]["f1"], abs=1e-9)
    table = bench.report({(0, 0): row}, scored.classes, "markov")
    assert f"| 0 | 0 | {row['model']['f1']:.4f} ({row['model']['gamma']:.2f})" in table
    assert "| 1.00 |" in table
