"""``python -m shopformer.serve.demo bundle=DIR``: start the HTTP service, send one real request, stop.

``run_output=FILE`` instead takes the bundle from the JSON line ``shopformer-train`` printed into FILE.

The request is a real session of the built-in synthetic data (the one ``make demo`` trains on):
its first events, oldest first, with their event types. ``make demo`` ends with this.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from shopformer.data.schema import EVENT_TYPE, ITEM_ID, SESSION_ID, TIMESTAMP
from shopformer.data.sources import SyntheticSource

STARTUP_SECONDS = 60.0


def demo_session(n_events: int = 6) -> dict[str, Any]:
    """The first ``n_events`` events of the synthetic data's first session that long with a cart event."""
    events = SyntheticSource().load().events.sort_values([SESSION_ID, TIMESTAMP], kind="stable")
    head = events.groupby(SESSION_ID, sort=False).head(n_events)
    sizes = head.groupby(SESSION_ID, sort=False)[ITEM_ID].transform("size")
    carts = (head[EVENT_TYPE] == "cart").groupby(head[SESSION_ID], sort=False).transform("any")
    first = head.loc[(sizes == n_events) & carts, SESSION_ID].iloc[0]
    session = head[head[SESSION_ID] == first]
    return {
        "items": session[ITEM_ID].tolist(),
        "event_types": session[EVENT_TYPE].astype(str).tolist(),
        "timestamps": [int(t) for t in session[TIMESTAMP]],  # unix seconds
        "k": 5,
        "exclude_seen": True,
        "filters": {"in_stock": True},
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _wait_healthy(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the service exited with code {server.returncode} before answering")
        try:
            _call(f"{url}/health")
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise RuntimeError(f"the service did not answer {url}/health within {STARTUP_SECONDS:.0f} s")


def run(bundle: str) -> dict[str, Any]:
    """Serve ``bundle`` on a free loopback port, POST one /recommend, print both, stop the service."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    serve = Path(sys.executable).with_name("shopformer-serve")
    command = [str(serve)] if serve.exists() else [sys.executable, "-m", "shopformer.serve.cli"]
    server = subprocess.Popen([*command, f"bundle={bundle}", f"port={port}", "log_level=warning"])
    try:
        _wait_healthy(url, server)
        body = demo_session()
        answer = _call(f"{url}/recommend", body)
        print(f"POST {url}/recommend\n{json.dumps(body)}")
        print(json.dumps(answer, indent=1))
        return answer
    finally:
        server.terminate()
        server.wait(timeout=30)


def bundle_from_run_output(path: str) -> str:
    """The ``bundle`` of the last JSON line in a saved ``shopformer-train`` output."""
    lines = [line for line in Path(path).read_text().splitlines() if line.startswith("{")]
    bundle = json.loads(lines[-1]).get("bundle") if lines else None
    if not bundle:
        raise RuntimeError(f"{path}: no JSON line with a 'bundle' (was the run trained with export=true?)")
    return bundle


def main(argv: list[str] | None = None) -> int:
    args = dict(a.split("=", 1) for a in (sys.argv[1:] if argv is None else argv) if "=" in a)
    bundle = args.get("bundle") or os.environ.get("SHOPFORMER_BUNDLE")
    if not bundle and not args.get("run_output"):
        print("usage: python -m shopformer.serve.demo bundle=DIR | run_output=FILE", file=sys.stderr)
        return 2
    try:
        run(bundle or bundle_from_run_output(args["run_output"]))
    except (RuntimeError, OSError, urllib.error.URLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
