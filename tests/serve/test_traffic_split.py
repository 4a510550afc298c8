"""A/B tests in the server: a stable split by visitor, each arm answered by its own bundle, logged."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest
from scipy.stats import chisquare

from shopformer.errors import ConfigError
from shopformer.serve.app import create_app
from shopformer.serve.event_log import read_log
from shopformer.serve.recommender import Recommender
from shopformer.serve.traffic_split import TrafficSplit, parse_split
from tests.serve.conftest import make_bundle
from tests.serve.test_exploration import _free_port, _wait_until_up

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

BIN = Path(sys.executable).parent


def test_split_shares_and_their_errors():
    assert parse_split("50/50", 2) == (0.5, 0.5) and parse_split("9/1", 2) == (0.9, 0.1)
    for bad, message in (("50-50", "not numbers"), ("50/30/20", "3 shares for 2 arms"), ("0/0", "positive")):
        with pytest.raises(ConfigError, match=message):
            parse_split(bad, 2)


@pytest.mark.parametrize("split", ["50/50", "90/10"])
def test_the_split_is_stable_and_holds_its_ratio(split):
    ab = TrafficSplit.of(("A", "B"), split)
    arms = np.array([ab.arm(f"user-{i}") for i in range(40_000)])
    assert [ab.arm(f"user-{i}") for i in range(100)] == arms[:100].tolist()  # same unit, same arm
    expected = np.array(ab.shares) * arms.size
    assert chisquare(np.bincount(arms, minlength=2), expected).pvalue > 0.001  # no sample-ratio mismatch
    assert TrafficSplit.of(("A", "B"), split, salt="other").arm("user-1") in (0, 1)


@pytest.fixture(scope="module")
def two_bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("ab")
    a = make_bundle(root / "a", n_items=80, seed=0, version="1")
    b = make_bundle(root / "b", n_items=80, seed=7, version="2")
    return a, b


def test_each_visitor_is_answered_by_its_arm_s_bundle_and_always_the_same(two_bundles, tmp_path):
    a, b = two_bundles
    app = create_app(Recommender.load(a.path), admin_token="", ab_bundle=b.path, log_dir=tmp_path)
    history = a.raw_ids[[3, 9]].tolist()
    with TestClient(app) as client:
        seen: dict[str, set] = {}
        for i in range(60):
            user = f"u{i % 15}"
            body = client.post("/recommend", json={"items": history, "k": 3, "user_id": user}).json()
            assert body["model"]["version"] == {"A": "1", "B": "2"}[body["arm"]]
            seen.setdefault(user, set()).add(body["arm"])
        batch = client.post(
            "/recommend/batch",
            json={"requests": [{"items": history, "k": 2, "session_id": f"s{i}"} for i in range(10)]},
        ).json()["results"]
    assert all(len(arms) == 1 for arms in seen.values()) and {"A", "B"} == set().union(*seen.values())
    split = TrafficSplit.of(("A", "B"), "50/50")
    assert [r["arm"] for r in batch] == [("A", "B")[split.arm(f"s{i}")] for i in range(10)]
    logged = read_log(tmp_path / "impressions", "impressions").to_pandas()
    assert len(logged) == 70 and logged.groupby("unit")["arm"].nunique().max() == 1
    assert set(logged.loc[logged["arm"] == "B", "model_version"]) == {"2"}


def test_a_bad_request_in_a_split_batch_is_named_by_its_place_in_the_batch(two_bundles):
    a, b = two_bundles
    client = TestClient(create_app(Recommender.load(a.path), admin_token="", ab_bundle=b.path))
    requests = [{"items": a.raw_ids[[1, 2]].tolist(), "session_id": f"s{i}"} for i in range(6)]
    requests[4]["filters"] = {"min_price": 50.0, "max_price": 10.0}  # valid JSON, refused by the rules
    response = client.post("/recommend/batch", json={"requests": requests})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "requests", 4, "filters", "min_price"]


def test_the_split_holds_under_32_concurrent_clients(two_bundles, tmp_path):
    a, b = two_bundles
    port = _free_port()
    server = subprocess.Popen(
        [BIN / "shopformer-serve", f"bundle={a.path}", f"ab.bundle={b.path}", "ab.split=50/50",
         f"port={port}", "log_level=warning", f"log_dir={tmp_path}", "log_flush_s=0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    history = a.raw_ids[[3, 9]].tolist()
    answers: list[tuple[str, str]] = []

    def visitor(c: int) -> None:
        with httpx.Client(timeout=30) as http:
            for j in range(25):
                user = f"c{c}-u{j % 12}"
                body = http.post(f"{url}/recommend", json={"items": history, "k": 3, "user_id": user}).json()
                answers.append((user, body["arm"]))

    try:
        _wait_until_up(server, url)
        clients = [threading.Thread(target=visitor, args=(c,)) for c in range(32)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=120)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        server.stdout.close()
    assert len(answers) == 32 * 25
    arms_of: dict[str, set] = {}
    for user, arm in answers:
        arms_of.setdefault(user, set()).add(arm)
    assert all(len(arms) == 1 for arms in arms_of.values())  # each visitor always sees one arm
    per_arm = np.array([sum(next(iter(a)) == arm for a in arms_of.values()) for arm in ("A", "B")])
    assert chisquare(per_arm).pvalue > 0.001, per_arm  # units split 50/50: no sample-ratio mismatch
    logged = read_log(tmp_path / "impressions", "impressions").to_pandas()
    assert len(logged) == len(answers) and logged.groupby("unit")["arm"].nunique().max() == 1
