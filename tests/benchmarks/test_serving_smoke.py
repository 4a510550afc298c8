"""Smoke test of the pure parts of ``benchmarks/serving.py`` (the script itself is run by hand)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from tests.benchmarks.scripts import load_benchmark


def test_synthetic_catalogue_resamples_real_vectors_around_them():
    bench = load_benchmark("serving")
    rng = np.random.default_rng(0)
    items = np.vstack([np.zeros((1, 8)), rng.standard_normal((50, 8))]).astype(np.float32)
    catalogue = bench.synthetic_catalogue(items, 1000, noise=0.1)
    assert catalogue.shape == (1001, 8) and catalogue.dtype == np.float32
    assert not catalogue[0].any()  # padding row
    nearest = np.min(((catalogue[1:, None] - items[None, 1:]) ** 2).sum(-1), axis=1)
    assert np.sqrt(nearest).max() < 1.0  # every row is a real item plus small noise


def test_faiss_rows_recall_and_speedup_columns():
    bench = load_benchmark("serving")
    rng = np.random.default_rng(1)
    items = rng.standard_normal((2001, 16)).astype(np.float32)
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    specs = [bench.IndexSpec("Flat", "Flat"), bench.IndexSpec("HNSW32", "HNSW32", "efSearch", (16, 400))]
    rows = bench.faiss_rows("random", items, queries, specs, flat_queries=5)
    assert [r[2] for r in rows] == ["exact", "efSearch=16", "efSearch=400"]
    assert rows[0][6] == "1.0000" and rows[0][7] == "1.0x"
    assert float(rows[2][6]) >= float(rows[1][6]) and float(rows[2][6]) > 0.9


def test_schedule_stops_at_the_request_cap_and_paces_an_open_loop():
    bench = load_benchmark("serving")
    closed = bench.Schedule(total=3, seconds=60, rate=None)
    assert [closed.take() is not None for _ in range(4)] == [True, True, True, False]
    opened = bench.Schedule(total=10, seconds=60, rate=100.0)
    times = [opened.take()[1] for _ in range(3)]
    assert np.allclose(np.diff(times), 0.01)
    assert bench.Schedule(total=10, seconds=0.0, rate=None).take() is None
    assert bench.pct([1.0] * 99 + [100.0])[0] == 1.0


def test_both_load_generators_count_answers_and_errors():
    import http.server
    import os
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = 500 if b"fail" in body else 200
            payload = b'{"items": []}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    bench = load_benchmark("serving")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port, me = server.server_address[1], SimpleNamespace(pid=os.getpgrp())
    try:
        for client in ("asyncio", "threads"):
            ok = bench.load_test(me, port, [b'{"items": [1]}'], 4, 40, 30.0, client=client)
            assert len(ok.latencies_ms) == 40 and ok.errors == 0, client
            failing = bench.load_test(me, port, [b'"fail"'], 2, 20, 30.0, client=client)
            assert len(failing.latencies_ms) == 20 and failing.errors == 20, client
            assert "500" in failing.first_error, client
    finally:
        server.shutdown()


def test_throughput_summary_pairs_each_round_with_the_plain_server_of_the_same_round():
    def row(rate: float, cpu: float = 1.0, mode: str = "closed loop", clients: int = 32) -> list:
        return ["x", mode, clients, 100, "10.0", f"{rate:.0f}", "1.0", "2.0", "-", "-", f"{cpu:.2f} / 0.10"]

    rounds = [
        ("cli", [row(500, clients=1), row(600, 1.0), row(300, mode="open loop")]),
        ("softmax_logged", [row(540, 1.1)]),
        ("softmax_logged", [row(500, 1.2)]),  # a round may start with either server
        ("cli", [row(700, 1.2)]),
        ("cli", [row(650, 1.1)]),
        ("softmax_logged", [row(610, 1.0)]),
    ]
    serving = load_benchmark("serving")
    summary = {line[0]: line[1:] for line in serving.throughput_summary(rounds, 32)}
    assert summary[serving.SERVERS["cli"].name] == [
        3,
        "600 / 700 / 650",
        "650",
        "1.00 (1.00-1.00)",
        "1.00 (1.00-1.00)",
    ]
    # per round 540/600, 500/700, 610/650; CPU 1.0/1.1, 1.2/1.2, 1.1/1.0
    assert summary[serving.SERVERS["softmax_logged"].name] == [
        3,
        "540 / 500 / 610",
        "540",
        "0.90 (0.71-0.94)",
        "1.00 (0.91-1.10)",
    ]


def test_rounds_rotate_the_server_order(monkeypatch):
    serving = load_benchmark("serving")
    ran = []
    monkeypatch.setattr(serving, "request_bodies", lambda setup: [])
    monkeypatch.setattr(serving, "server_rows", lambda key, *a: ran.append(key) or [])
    args = SimpleNamespace(servers=["cli", "softmax_logged", "greedy_logged"], rounds=4, http_clients=32)
    serving.http_section(None, args)
    assert ran == [
        *["cli", "softmax_logged", "greedy_logged"],
        *["softmax_logged", "greedy_logged", "cli"],
        *["greedy_logged", "cli", "softmax_logged"],
        *["cli", "softmax_logged", "greedy_logged"],
    ]


def test_time_slice_sets_this_threads_slice_and_restores_it():
    import ctypes
    import os
    import struct
    import sys

    import pytest

    bench = load_benchmark("serving")
    if sys.platform != "linux" or os.uname().machine not in ("x86_64", "aarch64"):
        pytest.skip("sched_getattr numbers are known for Linux x86_64 / aarch64 only")
    libc = ctypes.CDLL(None, use_errno=True)
    getattr_nr = 315 if os.uname().machine == "x86_64" else 275

    def runtime_ns() -> int:
        buf = ctypes.create_string_buffer(struct.calcsize(bench.SCHED_ATTR) + 8)
        if libc.syscall(getattr_nr, 0, buf, len(buf), 0) != 0:
            pytest.skip("sched_getattr refused here")
        return struct.unpack_from(bench.SCHED_ATTR, buf)[5]

    before = runtime_ns()
    with bench.time_slice(0.25):
        inside = runtime_ns()
    if inside == before:
        pytest.skip("this kernel has no custom slices for normal tasks (Linux < 6.12)")
    assert inside == 250_000
    assert runtime_ns() == before
    with bench.time_slice(None):
        assert runtime_ns() == before
