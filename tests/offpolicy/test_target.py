"""A target bundle and policy replayed on a served policy's logs, and ``shopformer-ope`` end to end."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from shopformer.offpolicy.cli import load_logs, main
from shopformer.offpolicy.report import evaluate
from shopformer.offpolicy.target import target_feedback
from shopformer.serve.app import create_app
from shopformer.serve.policies import PolicyConfig
from shopformer.serve.recommender import Recommender
from tests.serve.conftest import make_bundle

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("ope") / "bundle", n_items=120)


@pytest.fixture(scope="module")
def rec(bundle):
    return Recommender.load(bundle.path)


def serve_and_log(rec, bundle, log_dir, policy: dict, n: int = 150, seed: int = 0) -> None:
    """Serve ``n`` sessions under ``policy`` with logging on; click items with planted rates."""
    rng = np.random.default_rng(seed)
    app = create_app(rec, admin_token="", policy=policy, log_dir=log_dir, log_flush_interval=0.05)
    raw = bundle.raw_ids
    with TestClient(app) as client:
        for i in range(n):
            history = raw[rng.choice(len(raw), size=4, replace=False)].tolist()
            body = client.post("/recommend", json={"items": history, "k": 3, "request_id": f"r{i}"}).json()
            for slot, item in enumerate(body["items"]):
                rate = (0.5 if item["item_id"] % 2 else 0.1) / (1 + slot)
                if rng.random() < rate:
                    client.post(
                        "/feedback",
                        json={"request_id": f"r{i}", "item_id": item["item_id"], "event": "click"},
                    )


@pytest.fixture(scope="module")
def softmax_logs(rec, bundle, tmp_path_factory):
    directory = tmp_path_factory.mktemp("softmax-logs")
    serve_and_log(rec, bundle, directory, {"name": "softmax", "top_n": 8, "temperature": 0.5})
    return directory


def test_the_logging_policy_replayed_on_its_own_logs_has_weights_of_one(rec, softmax_logs):
    bandit, impressions, _ = load_logs(softmax_logs)
    policy = PolicyConfig("softmax", top_n=8, temperature=0.5).build()
    feedback = target_feedback(bandit.assign(reward=bandit["click"].astype(float)), impressions, rec, policy)
    # the replay encodes 150 sessions in one batch, the server one at a time: float32 scores differ
    # in the last digits, the propensities by a few parts per million
    np.testing.assert_allclose(feedback.target_pscore, feedback.pscore, rtol=1e-4)
    np.testing.assert_allclose(feedback.target_slate_pscore, feedback.slate_pscore, rtol=1e-4)
    assert feedback.unsupported_mass.max() < 1e-12
    ipw, snipw = evaluate(feedback, ["ipw", "snipw"], n_bootstrap=0)
    assert ipw.value == pytest.approx(bandit["click"].mean(), rel=1e-3)
    assert snipw.value == pytest.approx(bandit["click"].mean(), rel=1e-3)


def test_a_greedy_target_puts_its_mass_on_the_top_k_of_the_same_history(rec, softmax_logs):
    bandit, impressions, _ = load_logs(softmax_logs)
    feedback = target_feedback(
        bandit.assign(reward=bandit["click"].astype(float)), impressions, rec, PolicyConfig("greedy").build()
    )
    assert set(np.unique(feedback.target_pscore)) <= {0.0, 1.0}
    by_id = {str(r): r for r in rec.raw_ids.tolist()}
    request = impressions.iloc[7]
    top = [str(i) for i, _ in rec.recommend([by_id[s] for s in request["session_items"]], k=3).items]
    rows = bandit["request_id"] == request["request_id"]
    expected = [
        float(item == top[p - 1])
        for item, p in zip(bandit.loc[rows, "item_id"], bandit.loc[rows, "position"], strict=True)
    ]
    assert feedback.target_pscore[rows.to_numpy()].tolist() == expected
    # the softmax logs show other items at those slots: greedy's mass there is supported
    assert feedback.unsupported_mass.max() < 1e-12


def test_a_target_that_shows_what_greedy_logs_never_showed_is_flagged(rec, bundle, tmp_path):
    serve_and_log(rec, bundle, tmp_path, {"name": "greedy"}, n=60)
    bandit, impressions, _ = load_logs(tmp_path)
    policy = PolicyConfig("softmax", top_n=8).build()
    feedback = target_feedback(bandit.assign(reward=bandit["click"].astype(float)), impressions, rec, policy)
    assert feedback.unsupported_mass.mean() > 0.3
    (ipw,) = evaluate(feedback, ["ipw"], n_bootstrap=50)
    assert "never show" in ipw.warning


def test_the_command_prints_every_reward_and_writes_json(bundle, softmax_logs, tmp_path, capsys):
    out = tmp_path / "ope.json"
    args = [
        "--logs",
        str(softmax_logs),
        "--target",
        str(bundle.path),
        "--policy",
        "greedy",
        "--bootstrap",
        "100",
    ]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "logging policy softmax (150)" in printed and "## click per impression" in printed
    assert "in-stock share of the items shown: target" in printed  # business metrics beside the values
    result = json.loads(out.read_text())
    assert set(result["rewards"]) == {"click", "purchase", "revenue"}
    assert 0 <= result["lists"]["in_stock"]["target"] <= 1 and result["lists"]["price"]["logged"] > 0
    names = [e["name"] for e in result["rewards"]["click"]["estimates"]]
    assert names == ["ipw", "clipped-ipw", "snipw", "dm", "dr", "sndr", "switch-dr", "iips", "sips"]
    for e in result["rewards"]["click"]["estimates"]:
        assert e["low"] <= e["value"] <= e["high"] or e["name"] == "sips"


def exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    return stop.value.code


def test_bad_input_is_one_line(bundle, softmax_logs, tmp_path, capsys):
    assert exit_code(["--logs", str(tmp_path / "none"), "--target", str(bundle.path)]) == 2
    assert "no such log directory" in capsys.readouterr().err
    assert exit_code(["--logs", str(softmax_logs), "--target", str(bundle.path), "--policy", "ucb"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ucb" in err


def test_logs_without_propensities_are_refused(rec, softmax_logs):
    bandit, impressions, _ = load_logs(softmax_logs)
    bandit.loc[bandit.index[:5], "propensity"] = np.nan
    with pytest.raises(Exception, match="5 of .* shown items have no propensity"):
        target_feedback(bandit.assign(reward=0.0), impressions, rec, PolicyConfig().build())
    with pytest.raises(Exception, match="no 'propensity' column"):
        target_feedback(
            bandit.drop(columns="propensity").assign(reward=0.0), impressions, rec, PolicyConfig().build()
        )
    assert isinstance(impressions, pd.DataFrame)
