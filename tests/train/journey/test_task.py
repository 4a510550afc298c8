"""shopformer-train with a journey recipe, end to end on small synthetic data: metrics beside the baselines,
MLflow (metrics, plots, table), the checkpoint, the bundle with journey.onnx (ONNX parity with torch), and
the served bundle answering POST /journey for a real session."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hydra import compose, initialize_config_dir

import mlflow
from shopformer.data.journey.datamodule import JourneyDataModule
from shopformer.errors import ConfigError
from shopformer.models.journey.model import JourneyModel
from shopformer.serve.app import create_app
from shopformer.serve.bundle import JOURNEY, verify_bundle
from shopformer.serve.recommender import Recommender
from shopformer.train.checkpoint import checkpoint_config, load_checkpoint, restore_model
from shopformer.train.config import CONF_DIR, build_datamodule
from shopformer.train.evaluate import evaluate
from shopformer.train.export import export_checkpoint
from shopformer.train.journey.export import OUTPUTS, journey_onnx, journey_torch
from shopformer.train.journey.task import comparison_table
from shopformer.train.onnx_export import random_histories
from shopformer.train.train import run
from tests.train.runs import compose_train

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

JOURNEY_SMALL = [
    "experiment=journey_synthetic",
    "model.dim=16",
    "datamodule.max_len=20",
    "task.bootstrap_resamples=200",
    "model.category_statistics=outcomes",  # the item table's statistics travel in the checkpoint and the ONNX
]


@pytest.fixture(scope="module")
def journey_run(tmp_path_factory, mlflow_store):
    tmp_path = tmp_path_factory.mktemp("journey")
    cfg = compose_train(tmp_path, *JOURNEY_SMALL, "export=true", "task.weights.next_item=0.2")
    return run(cfg), tmp_path


@pytest.fixture(scope="module")
def restored(journey_run):
    summary, _ = journey_run
    checkpoint = load_checkpoint(summary["checkpoint"])
    cfg = checkpoint_config(checkpoint)
    dm = build_datamodule(cfg)
    dm.setup()
    return restore_model(checkpoint, cfg, dm), dm


def test_summary_has_model_and_baselines_on_the_same_prefixes(journey_run):
    summary, _ = journey_run
    assert json.loads(json.dumps(summary)) == summary
    assert set(summary["baselines"]) == {"majority", "markov", "logreg", "gbdt"}
    keys = {"conversion_roc_auc", "conversion_pr_auc", "conversion_log_loss", "conversion_ece"}
    keys |= {"next_event_accuracy", "next_event_macro_f1", "abandonment_roc_auc"}
    assert keys <= set(summary["test"])
    for values in summary["baselines"].values():
        assert keys <= set(values)
        for head in ("next_event_n", "conversion_n", "conversion_positives", "abandonment_n"):
            assert values[head] == summary["test"][head]  # the same labelled prefixes
    assert summary["test"]["conversion_n"] == summary["examples"]["test"]["conversion"] > 100
    assert summary["baselines"]["majority"]["conversion_roc_auc"] == 0.5
    assert 0.0 <= summary["test"]["conversion_roc_auc"] <= 1.0
    # the chosen weights on validation: what a variant is selected on, without looking at test
    assert keys <= set(summary["valid"])
    assert summary["valid"]["conversion_n"] == summary["examples"]["valid"]["conversion"]


def test_summary_says_whether_the_lead_over_each_baseline_is_real(journey_run):
    summary, _ = journey_run
    assert set(summary["lead"]) == set(summary["baselines"])
    for name, lead in summary["lead"].items():
        assert set(lead) == {"conversion_roc_auc", "next_event_macro_f1"}
        for metric, d in lead.items():
            expected = summary["test"][metric] - summary["baselines"][name][metric]
            assert d["delta"] == pytest.approx(expected, abs=1e-5)
            assert d["low"] <= d["high"] and d["sd"] >= 0 and 0 < d["resamples"] <= 200
    table = comparison_table(summary)
    assert "paired bootstrap" in table and "| logreg | conversion_roc_auc |" in table
    row = mlflow.search_runs(experiment_names=["shopformer"], filter_string=f"run_id = '{summary['run_id']}'")
    logged = row.iloc[0]["metrics.lead/logreg/test/conversion_roc_auc/delta"]
    assert logged == pytest.approx(summary["lead"]["logreg"]["conversion_roc_auc"]["delta"])


def test_run_is_tracked_with_plots_and_table(journey_run):
    summary, _ = journey_run
    row = mlflow.search_runs(experiment_names=["shopformer"], filter_string=f"run_id = '{summary['run_id']}'")
    row = row.iloc[0]
    assert row["metrics.test/conversion_roc_auc"] == pytest.approx(summary["test"]["conversion_roc_auc"])
    logreg = summary["baselines"]["logreg"]["conversion_roc_auc"]
    assert row["metrics.baseline/logreg/test/conversion_roc_auc"] == pytest.approx(logreg)
    assert "metrics.val/next_event_macro_f1" in row and row["params.model._target_"].endswith("JourneyModel")
    client = mlflow.MlflowClient()
    plots = {a.path for a in client.list_artifacts(summary["run_id"], "plots")}
    assert plots == {"plots/calibration.png", "plots/roc.png"}
    top = {a.path for a in client.list_artifacts(summary["run_id"])}
    assert {"journey_table.md", "journey_table.json", "journey_data.json", "bundle"} <= top
    for path in summary["plots"]:
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_restores_the_journey_model(restored, journey_run):
    model, dm = restored
    assert isinstance(model, JourneyModel) and isinstance(dm, JourneyDataModule)
    state = load_checkpoint(journey_run[0]["checkpoint"])["state_dict"]
    assert torch.equal(state["model.item_token"], model.item_token)  # the rare-item map travels along


def test_bundle_has_journey_onnx_matching_torch(journey_run, restored):
    summary, _ = journey_run
    model, dm = restored
    manifest = verify_bundle(summary["bundle"])
    entry = manifest["journey"]
    assert JOURNEY in manifest["files"] and entry["outputs"] == list(OUTPUTS)
    assert entry["event_classes"] == dm.event_classes and entry["parity_max_abs_diff"] < 1e-4
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        f"{summary['bundle']}/{JOURNEY}", options, providers=["CPUExecutionProvider"]
    )
    for batch, length in ((1, 1), (7, 5), (64, 20)):
        histories = random_histories(model, batch, length, seed=batch, pad=True)
        got, expected = journey_onnx(session, histories, entry["min_len"]), journey_torch(model, histories)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(got[0].sum(axis=1), 1.0, atol=1e-5)


def test_served_bundle_answers_a_real_session(journey_run, restored):
    summary, _ = journey_run
    _, dm = restored
    ds = dm.data
    position = int(dm.examples["test"].positions[-1])
    start = int(dm.labels.run_start[position])
    raw = ds.item_vocab.set_index("item").loc[ds.item[start : position + 1], "item_id"].tolist()
    session = {
        "items": raw,
        "event_types": [ds.event_vocab[e] for e in ds.event[start : position + 1]],
        "timestamps": ds.ts[start : position + 1].tolist(),
    }
    rec = Recommender.load(summary["bundle"])
    client = TestClient(create_app(rec, admin_token=""))
    body = client.post("/journey", json=session).json()
    assert sum(body["next_event_probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["unknown_items"] == [] and 0 < body["conversion"] < 1
    assert client.post("/recommend", json={**session, "k": 5}).status_code == 200  # the next-item head
    assert client.post("/journey", json={**session, "timestamps": None}).status_code == 422


def test_eval_of_a_journey_checkpoint_gives_the_runs_own_test_metrics(journey_run):
    summary, run_dir = journey_run
    result = evaluate(summary["checkpoint"], "test", ["all_items"], "cpu", str(run_dir / "cache"))
    for key in ("conversion_roc_auc", "next_event_macro_f1", "abandonment_roc_auc", "next_event_log_loss"):
        assert result["heads"][key] == pytest.approx(summary["test"][key], abs=1e-6)


@pytest.mark.slow
def test_shopformer_export_of_a_journey_checkpoint(journey_run, tmp_path):
    summary, run_dir = journey_run
    overrides = [
        f"ckpt={summary['checkpoint']}",
        f"out={tmp_path / 'bundle'}",
        f"paths.cache_dir={run_dir / 'cache'}",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("export", overrides=overrides)
    exported = export_checkpoint(cfg)
    assert verify_bundle(exported["bundle"])["journey"]["parity_max_abs_diff"] < 1e-4


@pytest.mark.slow
@pytest.mark.usefixtures("shared_data")
def test_taobao_bundle_answers_a_real_taobao_session(tmp_path):
    """experiment=journey_taobao (one epoch), then POST /journey with a session straight from the CSV."""
    import pandas as pd

    from shopformer.data.sources import TAOBAO_EVENTS, TaobaoSource

    overrides = [
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"trainer.default_root_dir={tmp_path / 'run'}",
        f"callbacks.model_checkpoint.dirpath={tmp_path / 'run' / 'checkpoints'}",
        "experiment=journey_taobao",
        "trainer.max_epochs=1",
        "logger=none",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    summary = run(cfg)
    raw = pd.read_csv(TaobaoSource().files()[0]).sort_values(["user_id", "timestamp"], kind="stable")

    def one_session(g):  # 4+ events within 30 minutes (one session), not only page views
        return (
            len(g) >= 4
            and g["timestamp"].max() - g["timestamp"].min() < 1800
            and (g["behavior_type"] != "pv").any()
        )

    user = raw.groupby("user_id").filter(one_session)
    session = user[user["user_id"] == user["user_id"].iloc[0]]
    body = {
        "items": session["item_id"].tolist(),
        "event_types": [TAOBAO_EVENTS[b] for b in session["behavior_type"]],
        "timestamps": session["timestamp"].tolist(),
    }
    client = TestClient(create_app(Recommender.load(summary["bundle"]), admin_token=""))
    answer = client.post("/journey", json=body).json()
    assert set(answer["next_event_probs"]) == {"view", "cart", "fav", "purchase"}
    assert sum(answer["next_event_probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert answer["unknown_items"] == [] and 0 < answer["conversion"] < 1
    bad = client.post("/journey", json={**body, "event_types": ["pv"] * len(body["items"])})
    assert bad.status_code == 422 and "event_types" in bad.json()["detail"][0]["loc"]


def test_a_ranking_option_is_refused_for_a_journey_run_naming_the_key(tmp_path):
    """Ranking options belong to the recommenders' module: the journey run says so, never drops them."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="exclude_seen"):
        compose_train(tmp_path, *JOURNEY_SMALL, "lit_module.exclude_seen=true")
    cfg = compose_train(tmp_path, *JOURNEY_SMALL, "+lit_module.ks=[5]", "logger=none")
    with pytest.raises(ConfigError, match=r"lit_module\.ks: JourneyModule takes no option 'ks'"):
        run(cfg)
