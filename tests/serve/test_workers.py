"""shopformer-serve workers=N: processes behind one port, each connection handed to the worker with
the fewest open connections, stopped together."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shopformer.serve.cli import serve_main
from shopformer.serve.workers import Balancer

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid(port: int) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # a new connection each time
        conn.request("GET", "/pid")
        return json.loads(conn.getresponse().read())["pid"]
    except OSError:
        return None


def _start_workers(port: int, factory: str = "make_app", workers: int = 2) -> subprocess.Popen:
    code = (
        "import sys; from shopformer.serve.workers import run_workers; "
        f"from tests.serve.tiny_app import {factory}; "
        f"sys.exit(run_workers({factory}, {workers}, '127.0.0.1', {port}, 'warning', {{}}))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )


def _wait_until_served(parent: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 60
    while _pid(port) is None:
        assert parent.poll() is None, "the workers exited"
        assert time.monotonic() < deadline, "no worker answered"
        time.sleep(0.2)


def _keep_alive(port: int) -> tuple[http.client.HTTPConnection, int]:
    """An open keep-alive connection and the worker process that serves it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/pid")
    return conn, json.loads(conn.getresponse().read())["pid"]


def test_connections_spread_over_the_workers_and_sigterm_stops_them_all():
    port = _free_port()
    parent = _start_workers(port)
    try:
        _wait_until_served(parent, port)  # the parent listens only once every worker is ready
        pids = {_pid(port) for _ in range(40)}
        assert len(pids) == 2 and parent.pid not in pids
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(30) == 0
        assert _pid(port) is None  # nothing listens any more
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    finally:
        if parent.poll() is None:
            parent.kill()


def test_keep_alive_connections_split_exactly_and_new_ones_go_to_the_least_loaded_worker():
    port = _free_port()
    parent = _start_workers(port)
    try:
        _wait_until_served(parent, port)
        time.sleep(0.5)  # the probe's connection is closed and counted
        opened = [_keep_alive(port) for _ in range(10)]
        served: dict[int, list] = {}
        for conn, pid in opened:
            served.setdefault(pid, []).append(conn)
        assert sorted(len(conns) for conns in served.values()) == [5, 5]  # a hash split is rarely 5/5
        (quiet, conns), (busy, _) = served.items()
        for conn in conns:
            conn.close()
        time.sleep(2.0)  # the worker counts the closes
        assert [_keep_alive(port)[1] for _ in range(4)] == [quiet] * 4
        assert _keep_alive(port)[1] in {quiet, busy}
    finally:
        parent.kill()
        parent.wait()


def test_a_worker_that_cannot_start_stops_the_service_before_it_listens():
    port = _free_port()
    parent = _start_workers(port, "make_broken_app")
    try:
        assert parent.wait(60) == 1
        assert _pid(port) is None
    finally:
        if parent.poll() is None:
            parent.kill()


def test_the_balancer_picks_the_fewest_open_connections_then_round_robin():
    closed = [0, 0, 0]
    balancer = Balancer(closed)
    assert [balancer.pick() for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    closed[1] = 2  # worker 1 closed both of its connections
    assert [balancer.pick() for _ in range(3)] == [1, 1, 2]
    assert balancer.open_connections() == [2, 2, 3]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["workers=2", "port=0"], "fixed port"),
        (["batching=sometimes"], "batching must be one of loop, thread, off"),
        (["max_batch=0"], "max_batch must be positive"),
        (["max_body_bytes=0"], "max_body_bytes must be positive"),
        (["max_wait_ms=-1"], "max_wait_ms must be between 0 and 1000, got -1.0"),
        (["max_wait_ms=nan"], "max_wait_ms must be between 0 and 1000"),
        (["max_wait_ms=soon"], "max_wait_ms='soon': expected a number"),
        (["log_writer=disk"], "log_writer must be one of thread, process, got 'disk'"),
    ],
)
def test_bad_serve_options_are_one_line_errors(capsys, options, message):
    assert serve_main(["bundle=/nonexistent", *options]) == 2  # refused before the bundle is read
    assert message in capsys.readouterr().err
