"""The serving rows of ``benchmarks/reliability.py``: a load test with two hot swaps, then a soak with
the server's RSS before and after."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq

TOKEN = "reliability-benchmark"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process (``VmRSS``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Load:
    """Closed-loop clients against ``/recommend``; what they saw."""

    url: str
    sessions: list[list[str]]
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, index: int, until: float) -> None:
        rng = np.random.default_rng(index)
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while time.perf_counter() < until:
                session = self.sessions[int(rng.integers(len(self.sessions)))]
                started = time.perf_counter()
                try:
                    answer = http.post("/recommend", json={"items": session, "k": 10})
                    ok = answer.status_code == 200
                    detail = "" if ok else f"HTTP {answer.status_code}: {answer.text[:120]}"
                    version = answer.json()["model"]["version"] if ok else None
                except httpx.HTTPError as exc:
                    ok, detail, version = False, f"{type(exc).__name__}: {exc}", None
                elapsed = time.perf_counter() - started
                with self.lock:
                    self.latencies.append(elapsed)
                    if ok:
                        self.versions.add(str(version))
                    else:
                        self.failures.append(detail)

    def run(self, clients: int, seconds: float) -> None:
        until = time.perf_counter() + seconds
        threads = [threading.Thread(target=self.client, args=(i, until), daemon=True) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def figures(self) -> tuple[int, int, float, float]:
        ms = np.asarray(self.latencies) * 1000
        return len(ms), len(self.failures), float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def sessions_of(bundle: Path, n: int = 500, length: int = 8) -> list[list[str]]:
    """Random sessions of the bundle's raw item ids (as strings: ids are matched as text)."""
    raw = pq.read_table(bundle / "vocab.parquet").column("item_id").to_pylist()
    rng = np.random.default_rng(0)
    return [[str(raw[i]) for i in rng.integers(0, len(raw), size=length)] for _ in range(n)]


def start_server(bundle: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "SHOPFORMER_ADMIN_TOKEN": TOKEN}
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "shopformer-serve"),
            f"bundle={bundle}",
            f"port={port}",
            "log_level=warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited: {server.stderr.read()[-1000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("server did not answer /health within 120 s")


def swap(url: str, bundle: Path) -> str:
    answer = httpx.post(
        f"{url}/admin/reload",
        json={"source": str(bundle)},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=120,
    )
    return f"HTTP {answer.status_code}"


def serve_rows(
    bundles: tuple[Path, Path], seconds: float, soak_seconds: float, clients: int
) -> list[list[Any]]:
    """Rows: the load test with two hot swaps, and the soak."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(bundles[0], port)
    try:
        load = Load(url, sessions_of(bundles[0]))
        swaps: list[str] = []

        def swapper() -> None:
            for at, bundle in ((seconds / 3, bundles[1]), (2 * seconds / 3, bundles[0])):
                time.sleep(max(0.0, started + at - time.perf_counter()))
                swaps.append(swap(url, bundle))

        started = time.perf_counter()
        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        load.run(clients, seconds)
        thread.join()
        sent, failed, p50, p99 = load.figures()
        rows = [
            [
                f"load test, {clients} clients, two hot swaps",
                f"{sent:,} requests in {seconds:.0f} s; swaps {', '.join(swaps)}; "
                f"versions seen {len(load.versions)}",
                f"failed {failed}; p50 {p50:.1f} ms, p99 {p99:.1f} ms",
                "pass"
                if failed == 0 and swaps == ["HTTP 200", "HTTP 200"] and len(load.versions) == 2
                else "FAIL",
                f"{seconds:.0f} s",
            ]
        ]
        before = rss_mb(server.pid)
        soak = Load(url, load.sessions)
        soak.run(max(1, clients // 4), soak_seconds)
        after = rss_mb(server.pid)
        sent, failed, p50, p99 = soak.figures()
        rows.append(
            [
                f"soak, {max(1, clients // 4)} clients",
                f"{sent:,} requests in {soak_seconds:.0f} s",
                f"failed {failed}; p99 {p99:.1f} ms; server RSS {before:.0f} -> {after:.0f} MB "
                f"({after - before:+.0f} MB)",
                "pass" if failed == 0 else "FAIL",
                f"{soak_seconds:.0f} s",
            ]
        )
        if load.failures or soak.failures:
            print(f"first failures: {(load.failures + soak.failures)[:3]}", file=sys.stderr)
        return rows
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
