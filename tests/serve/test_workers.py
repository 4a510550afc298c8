"""shopformer-serve workers=N: processes on one port with their own sockets, stopped together."""

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


def test_connections_spread_over_the_workers_and_sigterm_stops_them_all():
    port = _free_port()
    code = (
        "import sys; from shopformer.serve.workers import run_workers; "
        "from tests.serve.tiny_app import make_app; "
        f"sys.exit(run_workers(make_app, 2, '127.0.0.1', {port}, 'warning', {{}}))"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    try:
        deadline = time.monotonic() + 60
        while _pid(port) is None:
            assert parent.poll() is None, "the workers exited"
            assert time.monotonic() < deadline, "no worker answered"
            time.sleep(0.2)
        time.sleep(2)  # the second worker may still be starting
        pids = {_pid(port) for _ in range(40)}
        assert len(pids) == 2 and parent.pid not in pids  # the kernel spreads new connections
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(30) == 0
        assert _pid(port) is None  # nothing listens any more
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    finally:
        if parent.poll() is None:
            parent.kill()


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
    ],
)
def test_bad_serve_options_are_one_line_errors(capsys, options, message):
    assert serve_main(["bundle=/nonexistent", *options]) == 2  # refused before the bundle is read
    assert message in capsys.readouterr().err
