"""shopformer-train end to end on small synthetic data: summary, MLflow run, checkpoint, eval, baselines."""

from __future__ import annotations

import json

import pytest
import torch

import mlflow
from shopformer.train.evaluate import evaluate
from shopformer.train.train import run
from tests.train.runs import compose_train


def test_summary_line_and_checkpoint(sasrec_run):
    summary, tmp_path = sasrec_run
    assert json.loads(json.dumps(summary)) == summary  # the printed line is plain JSON
    assert set(summary["test"]) >= {"ndcg@10", "hr@10", "mrr@10", "coverage@10", "ndcg@100"}
    assert 0.0 <= summary["test"]["ndcg@10"] <= summary["test"]["hr@10"] <= 1.0
    assert summary["checkpoint"].endswith("best.ckpt") and summary["run_id"]
    assert summary["test"]["hr@100"] > 0.1
    # Business metrics beside accuracy: the synthetic shop has prices, stock and categories.
    business = {f"{name}@{k}" for name in ("revenue", "in_stock", "diversity", "novelty") for k in (10, 100)}
    assert set(summary["test"]) >= business
    assert 0.0 < summary["test"]["in_stock@10"] < 1.0 and 0.0 < summary["test"]["diversity@10"] <= 1.0
    assert 0.0 <= summary["test"]["novelty@10"] <= 1.0 and summary["test"]["revenue@100"] > 0.0


def test_run_is_tracked_in_mlflow(sasrec_run, mlflow_store):
    summary, _ = sasrec_run
    # Lightning's MLFlowLogger sets mlflow's process-wide URI to the store of the last run it logged
    # to (another test's, perhaps one it broke on purpose): ask this session's store.
    mlflow.set_tracking_uri(mlflow_store)
    runs = mlflow.search_runs(
        experiment_names=["shopformer"], filter_string=f"run_id = '{summary['run_id']}'"
    )
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["metrics.test/ndcg_10"] == pytest.approx(summary["test"]["ndcg@10"], abs=1e-6)
    assert row["metrics.test/in_stock_10"] == pytest.approx(summary["test"]["in_stock@10"], abs=1e-6)
    assert "metrics.val/ndcg_10" in row and row["tags.dataset"] == "synthetic"
    assert row["tags.git_commit"] and row["tags.dataset_hash"] == summary["dataset"]["hash"]
    assert row["params.model._target_"] == "shopformer.models.sasrec.SASRec"
    client = mlflow.MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(summary["run_id"])}
    assert {"config.yaml", "checkpoints", "environment.json"} <= artifacts
    versions = (
        client.load_dict(f"runs:/{summary['run_id']}/environment.json")
        if hasattr(client, "load_dict")
        else None
    )
    assert row["tags.version.torch"] == torch.__version__ and (
        versions is None or versions["torch"] == torch.__version__
    )
    history = client.get_metric_history(summary["run_id"], "val/ndcg_10")
    assert len(history) == 2  # one value per epoch


def test_eval_reproduces_test_metrics(sasrec_run):
    summary, tmp_path = sasrec_run
    result = evaluate(summary["checkpoint"], "test", ["all_items", "exclude_seen"], "cpu")
    assert result["all_items"]["ndcg@10"] == pytest.approx(summary["test"]["ndcg@10"], abs=1e-6)
    assert result["exclude_seen"]["n"] == result["all_items"]["n"]


@pytest.mark.parametrize("model", ["popularity", "transition"])
def test_baselines_evaluate_without_training(tmp_path, model, caplog):
    with caplog.at_level("INFO"):
        summary = run(compose_train(tmp_path, f"model={model}", "logger=none"))
    assert summary["epochs"] == 0 and summary["run_id"] is None
    assert summary["test"]["hr@100"] > 0.1
    if model == "popularity":  # the most popular items: novelty (popularity rank) near 0
        assert summary["test"]["novelty@10"] < 0.1
    assert not [r for r in caplog.records if "weights_only" in r.getMessage()]  # Lightning's save-time note


def test_a_catalogue_over_the_dense_limit_gets_the_sparse_transition_and_no_bundle(
    tmp_path, monkeypatch, capsys
):
    from shopformer.models import baselines

    dense = run(compose_train(tmp_path / "dense", "model=transition", "logger=none"))
    monkeypatch.setattr(baselines, "MAX_DENSE_TRANSITION_ITEMS", 10)
    capsys.readouterr()
    sparse = run(compose_train(tmp_path / "sparse", "model=transition", "logger=none", "export=true"))
    assert "export: no bundle for SparseTransition" in capsys.readouterr().out
    assert "bundle" not in sparse
    assert sparse["test"] == dense["test"]  # the same scores, so the same ranks and top-K lists
    again = evaluate(sparse["checkpoint"], "test", ["all_items"], "cpu")  # restored from its checkpoint
    assert again["all_items"]["ndcg@10"] == pytest.approx(sparse["test"]["ndcg@10"], abs=1e-9)


@pytest.mark.parametrize("model", ["bert4rec", "gru4rec"])
def test_other_encoders_train(tmp_path, model):
    summary = run(
        compose_train(tmp_path, f"model={model}", "model.dim=16", "logger=none", "trainer.max_epochs=1")
    )
    assert summary["test"]["hr@100"] > 0.0 and summary["epochs"] == 1


@pytest.mark.parametrize("loss", ["sampled_softmax", "bce", "gbce"])
def test_every_loss_trains(tmp_path, loss):
    summary = run(
        compose_train(tmp_path, f"loss={loss}", "model.dim=16", "logger=none", "trainer.max_epochs=1")
    )
    assert summary["test"]["hr@100"] > 0.0


def test_event_type_and_gap_channels(tmp_path):
    summary = run(
        compose_train(
            tmp_path,
            "features.event_types=true",
            "features.gap_buckets=true",
            "model.dim=16",
            "logger=none",
            "trainer.max_epochs=1",
        )
    )
    assert summary["test"]["hr@100"] > 0.0


def test_resume_continues_from_a_checkpoint(tmp_path):
    first = run(compose_train(tmp_path, "model.dim=16", "logger=none", "trainer.max_epochs=1"))
    assert first["epochs"] == 1
    resumed = run(
        compose_train(
            tmp_path / "again",
            "model.dim=16",
            "logger=none",
            "trainer.max_epochs=3",
            f"resume={first['checkpoint']}",
        )
    )
    assert resumed["epochs"] == 3  # epoch 1 and 2 trained on top of the checkpoint's epoch 0


def test_ema_weights_are_what_is_tested_and_saved(tmp_path):
    """With Lightning's EMA callback, the run's test metrics are those of the averaged weights, the ones
    the best checkpoint holds (and export / shopformer-eval load), not the raw weights."""
    summary = run(
        compose_train(
            tmp_path,
            "model.dim=16",
            "logger=none",
            "trainer.max_epochs=2",
            "+callbacks.ema._target_=lightning.pytorch.callbacks.EMAWeightAveraging",
            "+callbacks.ema.decay=0.9",
        )
    )
    result = evaluate(summary["checkpoint"], "test", ["all_items"], "cpu")
    for metric in ("ndcg@10", "hr@10", "hr@100"):
        assert result["all_items"][metric] == pytest.approx(summary["test"][metric], abs=1e-6)


def test_the_convergence_check_keeps_each_epochs_training_loss(sasrec_run):
    """What tells early stopping on noise apart from convergence: the loss curve, in the checkpoint."""
    summary, tmp_path = sasrec_run
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    (convergence,) = [v for k, v in state.items() if k.startswith("ConvergenceCheck")]
    assert [epoch for epoch, _ in convergence["losses"]] == [0, 1]  # SMALL: 2 epochs
    assert all(0.0 < loss < 20.0 for _, loss in convergence["losses"])
    assert len(convergence["history"]) == 2 and summary["convergence"]
