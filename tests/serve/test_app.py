"""The HTTP API through FastAPI's TestClient: answers, 4xx for every bad request, metrics, reload."""

from __future__ import annotations

import threading
import time
import warnings

import pytest

from shopformer.serve.app import create_app
from shopformer.serve.schemas import MAX_BATCH

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx vs httpx2
    from fastapi.testclient import TestClient

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def client(recommender):
    return TestClient(create_app(recommender, admin_token=""))


@pytest.fixture(scope="module")
def journey_client(journey_recommender):
    return TestClient(create_app(journey_recommender, admin_token=""))


@pytest.fixture
def history(bundle) -> list:
    return bundle.raw_ids[[3, 30, 77]].tolist()


def test_recommend(client, recommender, history):
    response = client.post("/recommend", json={"items": history, "k": 5, "filters": {"in_stock": True}})
    assert response.status_code == 200
    body = response.json()
    expected = recommender.recommend(history, k=5, filters={"in_stock": True})
    assert [(i["item_id"], pytest.approx(i["score"])) for i in body["items"]] == expected.items
    assert body["unknown_items"] == []
    assert body["model"] == {"name": "handmade", "version": "1"}


def test_unknown_items_are_reported(client, history):
    body = client.post("/recommend", json={"items": [history[0], 424242, "abc"], "k": 3}).json()
    assert body["unknown_items"] == [424242, "abc"] and len(body["items"]) == 3
    body = client.post("/recommend", json={"items": ["abc"], "k": 3}).json()
    assert body["items"] == [] and body["unknown_items"] == ["abc"]


def test_batch_and_similar(client, recommender, bundle, history):
    requests = [{"items": history, "k": 4}, {"items": history[:1], "k": 2, "exclude_seen": False}]
    body = client.post("/recommend/batch", json={"requests": requests}).json()
    assert [len(r["items"]) for r in body["results"]] == [4, 2]
    assert [i["item_id"] for i in body["results"][0]["items"]] == [
        i for i, _ in recommender.recommend(history, k=4).items
    ]
    body = client.post("/similar", json={"item_id": history[0], "k": 6}).json()
    assert len(body["items"]) == 6 and history[0] not in [i["item_id"] for i in body["items"]]


def test_journey_request(journey_client, journey_recommender):
    payload = {
        "items": ["sku-0001", "sku-0042"],
        "event_types": ["view", "cart"],
        "timestamps": [10, 400],
        "k": 3,
    }
    body = journey_client.post("/recommend", json=payload).json()
    expected = journey_recommender.recommend(
        payload["items"], payload["event_types"], payload["timestamps"], k=3
    )
    assert [i["item_id"] for i in body["items"]] == [i for i, _ in expected.items]


def test_service_endpoints(client, bundle):
    assert client.get("/health").json()["status"] == "ok"
    meta = client.get("/metadata").json()
    assert meta["name"] == "handmade" and meta["n_items"] == 300 and "items.npy" in meta["files"]
    assert meta["attributes"] == {
        "category": "category",
        "price": "price",
        "in_stock": "flag",
        "new_arrival": "flag",
    }
    assert client.get("/docs").status_code == 200
    assert {"/recommend", "/recommend/batch", "/similar"} <= set(client.get("/openapi.json").json()["paths"])


BAD = [
    ({"items": "abc"}, "items"),
    ({"items": [{"id": 1}]}, "items"),
    ({"items": [1.5]}, "items"),
    ({"items": [True]}, "items"),
    ({"items": []}, "items"),
    ({}, "items"),
    ({"items": [1003], "k": "ten"}, "k"),
    ({"items": [1003], "k": -1}, "k"),
    ({"items": [1003], "k": 0}, "k"),
    ({"items": [1003], "k": 10**9}, "k"),
    ({"items": [1003], "k": 2.5}, "k"),
    ({"items": [1003], "exclude_seen": "maybe"}, "exclude_seen"),
    ({"items": [1003, 1006], "event_types": ["view"]}, "event_types"),
    ({"items": [1003, 1006], "timestamps": [1]}, "timestamps"),
    ({"items": [1003], "filters": {"colour": ["red"]}}, "colour"),
    ({"items": [1003], "filters": {"boosts": {"shiny": 1}}}, "shiny"),
    ({"items": [1003], "filters": {"min_price": 9, "max_price": 1}}, "min_price"),
    ({"items": [1003], "filters": "in_stock"}, "filters"),
    ({"items": [1003], "user": "me"}, "user"),
    ({"items": list(range(5000))}, "items"),
]


@pytest.mark.parametrize(("payload", "field"), BAD)
def test_bad_recommend_requests_are_422_naming_the_field(client, payload, field):
    response = client.post("/recommend", json=payload)
    assert response.status_code == 422, response.text
    assert any(field in map(str, d["loc"]) for d in response.json()["detail"]), response.text


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/recommend", b"{not json"),
        ("/recommend", b"[1, 2, 3]"),
        ("/recommend", b""),
        ("/recommend/batch", b'{"requests": {"items": [1]}}'),
        ("/similar", b'{"k": 3}'),
        ("/similar", b'{"item_id": null}'),
    ],
)
def test_malformed_bodies_are_422(client, path, content):
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text


def test_batch_limits_and_positions(client, history):
    too_many = {"requests": [{"items": history}] * (MAX_BATCH + 1)}
    assert client.post("/recommend/batch", json=too_many).status_code == 422
    assert client.post("/recommend/batch", json={"requests": []}).status_code == 422
    bad = {"requests": [{"items": history}, {"items": history, "filters": {"boosts": {"shiny": 1}}}]}
    detail = client.post("/recommend/batch", json=bad).json()["detail"]
    assert detail[0]["loc"] == ["body", "requests", 1, "filters", "boosts", "shiny"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"items": ["sku-0001"], "event_types": ["teleport"], "timestamps": [1]}, "event_types"),
        ({"items": ["sku-0001"], "event_types": ["view"]}, "timestamps"),
        ({"items": ["sku-0001"], "timestamps": ["noon"]}, "timestamps"),
    ],
)
def test_journey_model_errors(journey_client, payload, field):
    response = journey_client.post("/recommend", json=payload)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"][0]["loc"]


def test_metrics_count_requests(recommender, history):
    client = TestClient(create_app(recommender, admin_token=""))
    for _ in range(3):
        client.post("/recommend", json={"items": [*history, "mystery"]})
    client.post("/recommend", json={"items": []})
    client.get("/nowhere")
    text = client.get("/metrics").text
    assert 'shopformer_requests_total{endpoint="/recommend",status="200"} 3.0' in text
    assert 'shopformer_requests_total{endpoint="/recommend",status="422"} 1.0' in text
    assert 'shopformer_requests_total{endpoint="unmatched",status="404"} 1.0' in text
    assert 'shopformer_request_seconds_count{endpoint="/recommend"} 4.0' in text
    assert "shopformer_unknown_items_total 3.0" in text
    assert 'shopformer_model_info{name="handmade",version="1"} 1.0' in text


def test_unexpected_errors_are_json_500(recommender, monkeypatch, history):
    app = create_app(recommender, admin_token="")
    monkeypatch.setattr(app.state.slot, "current", _Broken(recommender))
    response = TestClient(app, raise_server_exceptions=False).post("/recommend", json={"items": history})
    assert response.status_code == 500
    assert response.json()["error_id"] in response.json()["detail"]
    assert "RuntimeError" not in response.text and "boom" not in response.text  # internals stay in the log


class _Broken:
    def __init__(self, rec):
        self.name, self.version = rec.name, rec.version

    def recommend_batch(self, sessions):
        raise RuntimeError("boom")


@pytest.fixture(scope="module")
def second_bundle(tmp_path_factory):
    from tests.serve.conftest import make_bundle

    return make_bundle(tmp_path_factory.mktemp("v2") / "bundle", version="2")  # same vectors, version 2


def test_reload_needs_the_token(recommender, second_bundle, monkeypatch):
    monkeypatch.delenv("SHOPFORMER_ADMIN_TOKEN", raising=False)
    off = TestClient(create_app(recommender))
    assert off.post("/admin/reload", json={"source": str(second_bundle.path)}).status_code == 403
    monkeypatch.setenv("SHOPFORMER_ADMIN_TOKEN", TOKEN)
    client = TestClient(create_app(recommender))
    body = {"source": str(second_bundle.path)}
    assert client.post("/admin/reload", json=body).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.post("/admin/reload", json=body, headers=wrong).status_code == 401
    assert client.get("/health").json()["model"]["version"] == "1"
    right = {"Authorization": f"Bearer {TOKEN}"}
    response = client.post("/admin/reload", json=body, headers=right)
    assert response.status_code == 200 and response.json()["model"]["version"] == "2"
    assert client.get("/health").json()["model"]["version"] == "2"
    refused = client.post("/admin/reload", json={"source": "/no/such/bundle"}, headers=right)
    assert refused.status_code == 422 and "no such directory" in refused.json()["detail"][0]["msg"]
    assert client.get("/health").json()["model"]["version"] == "2"  # still serving the last good one
    assert 'shopformer_reloads_total{result="refused"} 1.0' in client.get("/metrics").text


def test_reload_under_load_drops_no_request(recommender, bundle, second_bundle, history):
    client = TestClient(create_app(recommender, admin_token=TOKEN))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    statuses, versions, stop = [], set(), threading.Event()

    def hammer():
        while not stop.is_set():
            response = client.post("/recommend", json={"items": history, "k": 5})
            statuses.append(response.status_code)
            versions.add(response.json()["model"]["version"])

    workers = [threading.Thread(target=hammer) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        for source in (second_bundle.path, bundle.path, second_bundle.path):
            _wait_for_more(statuses)  # requests in flight around each swap
            reloaded = client.post("/admin/reload", json={"source": str(source)}, headers=headers)
            assert reloaded.status_code == 200
        _wait_for_more(statuses)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert set(statuses) == {200}
    assert versions == {"1", "2"}


def _wait_for_more(done: list, more: int = 3, timeout: float = 10.0) -> None:
    target, deadline = len(done) + more, time.monotonic() + timeout
    while len(done) < target:
        assert time.monotonic() < deadline, "no requests completed in time"
        time.sleep(0.005)


def test_workers_follow_a_reload_through_the_shared_file(recommender, bundle, second_bundle, tmp_path):
    shared = tmp_path / "bundle-source.json"
    options = {"admin_token": TOKEN, "shared_reload": shared, "follow_interval": 0.05}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with (
        TestClient(create_app(recommender, **options)) as one,
        TestClient(create_app(recommender, **options)) as two,
    ):
        response = one.post("/admin/reload", json={"source": str(second_bundle.path)}, headers=headers)
        assert response.status_code == 200
        assert one.get("/health").json()["model"]["version"] == "2"
        deadline = time.monotonic() + 10
        while two.get("/health").json()["model"]["version"] != "2":
            assert time.monotonic() < deadline, "the other worker did not follow the reload"
            time.sleep(0.05)
        # and back: the second worker publishes, the first follows
        assert (
            two.post("/admin/reload", json={"source": str(bundle.path)}, headers=headers).status_code == 200
        )
        while one.get("/health").json()["model"]["version"] != "1":
            assert time.monotonic() < deadline, "the first worker did not follow the reload"
            time.sleep(0.05)
        assert 'shopformer_reloads_total{result="ok"} 2.0' in one.get("/metrics").text  # its own + followed
