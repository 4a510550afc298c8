"""Exploring answers over HTTP: propensities, reproducible draws, rules first, and both logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest

from shopformer.serve.app import create_app
from shopformer.serve.event_log import read_log
from shopformer.serve.exploration import answer_asks, make_ask
from shopformer.serve.log_schemas import IMPRESSION_SCHEMA, impression_row, record_batch
from shopformer.serve.policies import POLICY_VERSION, PolicyConfig
from shopformer.serve.serving_logs import ServingLogs

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def client(recommender):
    return TestClient(create_app(recommender, admin_token="", policy={"name": "softmax", "top_n": 12}))


@pytest.fixture
def history(bundle) -> list:
    return bundle.raw_ids[[3, 30, 77]].tolist()


def test_softmax_answers_carry_the_propensity_of_each_slot(client, recommender, history):
    body = client.post("/recommend", json={"items": history, "k": 4, "request_id": "req-1"}).json()
    assert body["request_id"] == "req-1" and body["policy"] == {"name": "softmax", "version": POLICY_VERSION}
    candidates = recommender.recommend(history, k=12).items  # what the policy draws from
    ids = [i for i, _ in candidates]
    scores = np.array([s for _, s in candidates])
    table = PolicyConfig("softmax", top_n=12).build().marginals(scores, 4)
    for slot, item in enumerate(body["items"]):
        assert item["item_id"] in ids
        assert item["propensity"] == pytest.approx(table[ids.index(item["item_id"]), slot], rel=1e-4)
    assert 0 < body["slate_propensity"] <= min(i["propensity"] for i in body["items"])


def test_the_same_request_id_gives_the_same_answer_and_others_explore(client, history):
    first = client.post("/recommend", json={"items": history, "k": 4, "request_id": "again"}).json()
    second = client.post("/recommend", json={"items": history, "k": 4, "request_id": "again"}).json()
    assert first["items"] == second["items"]
    lists = {
        tuple(
            i["item_id"] for i in client.post("/recommend", json={"items": history, "k": 4}).json()["items"]
        )
        for _ in range(20)
    }
    assert len(lists) > 1


def test_a_request_overrides_the_server_policy(client, recommender, history):
    body = client.post("/recommend", json={"items": history, "k": 5, "policy": {"name": "greedy"}}).json()
    assert [i["item_id"] for i in body["items"]] == [i for i, _ in recommender.recommend(history, k=5).items]
    assert all(i["propensity"] == 1.0 for i in body["items"]) and body["policy"]["name"] == "greedy"
    bad = client.post("/recommend", json={"items": history, "policy": {"name": "softmax", "temperature": 0}})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "temperature"
    bad = client.post("/recommend", json={"items": history, "policy": {"name": "ucb"}})
    assert bad.status_code == 422


def test_business_rules_apply_before_the_policy_draws(client, bundle, history):
    in_stock = dict(zip(bundle.vocab["item_id"], bundle.vocab["in_stock"], strict=True))
    for i in range(10):
        body = client.post(
            "/recommend",
            json={"items": history, "k": 5, "filters": {"in_stock": True}, "request_id": f"f{i}"},
        ).json()
        assert body["items"] and all(in_stock[item["item_id"]] for item in body["items"])


def test_feedback_needs_a_log_dir(client):
    answer = client.post("/feedback", json={"request_id": "r", "item_id": 1, "event": "click"})
    assert answer.status_code == 404 and "log_dir" in answer.json()["detail"]


def test_every_answer_and_feedback_is_logged_and_unknown_requests_are_counted(recommender, history, tmp_path):
    app = create_app(
        recommender,
        admin_token="",
        policy={"name": "epsilon_greedy", "epsilon": 0.5},
        log_dir=tmp_path,
        log_flush_interval=0.05,
    )
    with TestClient(app) as client:
        ids = []
        for i in range(30):
            body = client.post("/recommend", json={"items": history, "k": 3, "request_id": f"q{i}"}).json()
            ids.append((body["request_id"], [item["item_id"] for item in body["items"]]))
        batch = client.post("/recommend/batch", json={"requests": [{"items": history, "k": 2}] * 4}).json()
        assert len(batch["results"]) == 4
        shown = ids[0][1][0]
        matches = [
            client.post("/feedback", json=body).json()["match"]
            for body in (
                {"request_id": "q0", "item_id": shown, "event": "click"},
                {"request_id": "q0", "item_id": shown, "event": "purchase", "revenue": 19.5},
                {"request_id": "nobody", "item_id": shown, "event": "click"},
                {"request_id": "q1", "item_id": "not-an-item", "event": "click"},
            )
        ]
        assert matches == ["matched", "matched", "unknown_request", "item_not_shown"]
        bad = client.post("/feedback", json={"request_id": "q0", "item_id": shown, "event": "like"})
        assert bad.status_code == 422
        assert app.state.slot.logs.counts.counts(np.array([shown]))[1][0] == 1  # thompson's click count
    impressions = read_log(tmp_path / "impressions", "impressions").to_pandas()
    feedback = read_log(tmp_path / "feedback", "feedback").to_pandas()
    assert len(impressions) == 34 and impressions["request_id"].is_unique
    row = impressions.set_index("request_id").loc["q5"]
    assert row["policy"] == "epsilon_greedy" and row["model_name"] == "handmade"
    assert list(row["shown"]) == [str(i) for i in dict(ids)["q5"]] and len(row["propensities"]) == 3
    assert list(row["session_items"]) == [str(i) for i in history] and len(row["candidates"]) == 20
    assert len(feedback) == 4 and feedback["revenue"].sum() == pytest.approx(19.5)


@pytest.mark.parametrize("policy", ["greedy", "softmax"])
def test_the_servers_fast_row_is_impression_row_of_the_same_answer(recommender, history, tmp_path, policy):
    logs = ServingLogs(tmp_path, flush_interval=3600)
    ask = make_ask({"items": history, "k": 3}, PolicyConfig(name=policy).build(), "q1", unit="visitor-7")
    [shown] = answer_asks(recommender, [ask])
    filters = {"in_stock": True, "exclude": [history[0]]}
    logs.record(ask, shown, ("handmade", "3"), filters, "B")
    logs.close()
    [logged] = read_log(tmp_path / "impressions", "impressions").to_pylist()
    expected = impression_row(
        request_id="q1",
        model_name="handmade",
        model_version="3",
        policy=policy,
        policy_version=POLICY_VERSION,
        session_items=history,
        candidates=shown.candidates,
        candidate_scores=shown.candidate_scores,
        shown=[item for item, _, _ in shown.items],
        propensities=[p for _, _, p in shown.items],
        slate_propensity=shown.slate_propensity,
        arm="B",
        unit="visitor-7",
        filters=filters,
        k=3,
        time=logged["time"],
    )
    assert logged == record_batch([expected], IMPRESSION_SCHEMA).to_pylist()[0]
    assert len(logged["shown"]) == 3 and json.loads(logged["filters"]) == filters


def test_no_logged_row_is_lost_when_the_server_is_stopped_under_load(bundle, history, tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [BIN / "shopformer-serve", f"bundle={bundle.path}", f"port={port}", "log_level=warning",
         "policy=softmax", f"log_dir={tmp_path}", "log_flush_s=0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    answered: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                try:
                    response = http.post(f"{url}/recommend", json={"items": history, "k": 5})
                except httpx.TransportError:
                    return  # the server has stopped listening
                if response.status_code == 200:
                    answered.append(response.json()["request_id"])

    try:
        _wait_until_up(server, url)
        clients = [threading.Thread(target=load) for _ in range(8)]
        for c in clients:
            c.start()
        time.sleep(2.0)  # under load, well past several flush intervals
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal: the exit status says SIGTERM
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        stop.set()
        if server.poll() is None:
            server.kill()
        server.stdout.close()
    for c in clients:
        c.join(timeout=20)
    logged = read_log(tmp_path / "impressions", "impressions").to_pandas()["request_id"]
    assert len(answered) > 50
    assert set(answered) <= set(logged) and logged.is_unique
    assert len(logged) - len(answered) <= 8  # at most one answer per client was cut off in flight
    assert not list((tmp_path / "impressions").glob("*.arrows"))  # every journal became Parquet


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(server: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, server.stdout.read()
        try:
            httpx.get(f"{url}/health", timeout=1)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "shopformer-serve did not start"
            time.sleep(0.1)


if os.name == "nt":  # SIGTERM is not a graceful stop there
    pytestmark = pytest.mark.skip("POSIX signals")
