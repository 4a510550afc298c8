"""Service defaults: body limit before parsing (413), CORS closed, no internals in a 500, loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import warnings

import pytest
import uvicorn

from shopformer.serve.app import create_app
from shopformer.serve.cli import SERVE_ARGS, parse_args
from shopformer.serve.limits import BodyLimitMiddleware

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

LIMIT = 1000


class Recorder:
    """An ASGI app that reads the whole body and answers 200 with its length."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


def call(app, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, int]:
    """Drive ``app`` with one request whose body arrives as ``chunks``: (status, body, chunks read)."""
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    read, sent = [0], []

    async def receive():
        read[0] += 1
        return messages[read[0] - 1] if read[0] <= len(messages) else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/recommend", "headers": headers}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), read[0]


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    inner = Recorder()
    status, body, read = call(BodyLimitMiddleware(inner, LIMIT), [b"x" * 10], [(b"content-length", b"5000")])
    assert status == 413 and read == 0 and inner.bodies == []
    assert (
        "declares 5000 bytes" in json.loads(body)["detail"] and "max_body_bytes" in json.loads(body)["detail"]
    )


@pytest.mark.parametrize(
    "headers",
    [[(b"content-length", b"10")], [], [(b"transfer-encoding", b"chunked")]],
    ids=["lying-content-length", "no-content-length", "chunked"],
)
def test_a_body_over_the_limit_is_refused_by_its_actual_size(headers):
    inner = Recorder()
    chunks = [b"y" * 400] * 10  # 4000 bytes in ten pieces
    status, body, read = call(BodyLimitMiddleware(inner, LIMIT), chunks, headers)
    assert status == 413 and inner.bodies == []  # the app never saw (or parsed) any of it
    assert read == 3  # stopped reading at the chunk that crossed the limit
    assert f"more than {LIMIT} bytes" in json.loads(body)["detail"]


def test_a_body_within_the_limit_reaches_the_app_whole():
    inner = Recorder()
    status, body, _ = call(BodyLimitMiddleware(inner, LIMIT), [b"a" * 300, b"b" * 300, b""], [])
    assert status == 200 and inner.bodies == [b"a" * 300 + b"b" * 300] and body == b"600"


def test_the_app_answers_413_for_a_large_chunked_body_and_200_below(recommender, bundle):
    client = TestClient(create_app(recommender, admin_token="", max_body_bytes=2000))
    history = bundle.raw_ids[[3, 30]].tolist()
    small = json.dumps({"items": history}).encode()
    json_type = {"Content-Type": "application/json"}
    chunked = client.post("/recommend", content=iter([small[:5], small[5:]]), headers=json_type)
    assert chunked.status_code == 200 and chunked.json()["items"]  # reassembled and parsed
    big = json.dumps({"items": history * 300}).encode()
    response = client.post("/recommend", content=iter([big[:1500], big[1500:]]), headers=json_type)
    assert response.status_code == 413 and "2000 bytes" in response.json()["detail"]
    assert client.post("/recommend", content=big, headers=json_type).status_code == 413  # Content-Length
    text = client.get("/metrics").text
    assert 'shopformer_requests_total{endpoint="unmatched",status="413"} 2.0' in text


@pytest.fixture
def live(recommender):
    """The app on a real uvicorn server on loopback (a thread of this process): its port."""
    app = create_app(recommender, admin_token="", max_body_bytes=2000)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)


def exchange(port: int, head: bytes, body_parts: list[bytes]) -> bytes:
    """Send ``head`` then the parts (a short pause between), return all the server says until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for part in body_parts:
            time.sleep(0.01)
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed: the rest is never read
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_real_server_refuses_chunked_and_announced_bodies_over_the_limit(live):
    chunked = [b"%x\r\n%s\r\n" % (500, b"[" * 500) for _ in range(10)] + [b"0\r\n\r\n"]
    head = (
        b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    answer = exchange(live, head, chunked)
    assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()
    assert b"max_body_bytes" in answer and b"Traceback" not in answer
    # A client announcing 10 MB gets its 413 before it sends a byte of the body (the connection closes).
    announced = b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
    assert exchange(live, announced, []).startswith(b"HTTP/1.1 413")


def test_cors_is_closed_by_default(client):
    preflight = client.options(
        "/recommend",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = client.get("/health", headers={"Origin": "https://evil.example"})
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


@pytest.fixture(scope="module")
def client(recommender):
    return TestClient(create_app(recommender, admin_token=""))


class Exploding:
    """Stands in for the recommender and fails with internals a client must not see."""

    def __init__(self, rec) -> None:
        self.name, self.version = rec.name, rec.version

    def recommend_batch(self, sessions):
        raise KeyError("/secret/path/items.npy at 0xdeadbeef")


@pytest.mark.parametrize("batching", ["loop", "off"])
def test_an_internal_error_is_json_without_internals(recommender, bundle, monkeypatch, caplog, batching):
    app = create_app(recommender, admin_token="", batching=batching)
    monkeypatch.setattr(app.state.slot, "current", Exploding(recommender))
    with caplog.at_level(logging.ERROR, logger="shopformer.serve"):
        response = TestClient(app, raise_server_exceptions=False).post(
            "/recommend", json={"items": bundle.raw_ids[[1]].tolist()}
        )
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"detail", "error_id"} and body["error_id"] in body["detail"]
    for leak in ("secret", "deadbeef", "KeyError", "Traceback", "recommender.py", 'File "'):
        assert leak not in response.text
    assert body["error_id"] in caplog.text and "deadbeef" in caplog.text  # the log has what the client lacks


def test_loopback_and_limits_are_the_defaults():
    args = parse_args(["bundle=somewhere"], SERVE_ARGS, "shopformer-serve")
    assert args["host"] == "127.0.0.1"
    assert args["max_body_bytes"] == 8 * 1024 * 1024
