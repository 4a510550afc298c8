"""``python -m shopformer.serve.demo bundle=DIR``: start the HTTP service, send one real request, stop.

``run_output=FILE`` instead takes the bundle from the JSON line ``shopformer-train`` printed into FILE.

The request is a real session of the built-in synthetic data (the one ``make demo`` trains on):
its first events, oldest first, with their event types. It prints the session and the answer as two
small tables, each item with its category, price and stock as the bundle's ``vocab.parquet`` lists
them. ``make demo`` ends with this.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from shopformer.data.schema import EVENT_TYPE, ITEM_ID, SESSION_ID, TIMESTAMP
from shopformer.data.sources import SyntheticSource
from shopformer.serve.bundle import VOCAB

STARTUP_SECONDS = 60.0
ATTRIBUTES = ("category", "price", "in_stock")  # the columns the tables show, when the bundle has them
MISSING = "-"


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


def item_attributes(bundle: str) -> pd.DataFrame:
    """Category, price and stock by raw item id, from the bundle's vocabulary (none for a bundle that
    is not a local directory, e.g. ``models:/...``)."""
    path = Path(bundle) / VOCAB
    if not path.is_file():
        return pd.DataFrame(columns=list(ATTRIBUTES))
    vocab = pq.read_table(path).to_pandas()
    return vocab.set_index(ITEM_ID)[[c for c in ATTRIBUTES if c in vocab.columns]]


def describe(item: Any, attributes: pd.DataFrame) -> list[str]:
    """``[category, price, in stock]`` of one item as text (``-`` where the bundle does not say)."""
    row = attributes.loc[item] if item in attributes.index else pd.Series(dtype=object)
    category, price, in_stock = (row.get(name) for name in ATTRIBUTES)
    return [
        MISSING if pd.isna(category) else str(category),
        MISSING if price is None or pd.isna(price) else f"{float(price):.2f}",
        MISSING if in_stock is None or pd.isna(in_stock) else ("yes" if in_stock else "no"),
    ]


def table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    """An aligned plain-text table; columns numbered in ``right`` are right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        parts = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def session_table(body: dict[str, Any], attributes: pd.DataFrame, unknown: list[Any]) -> str:
    """The events sent, oldest first, each item with its attributes."""
    events = body.get("event_types") or [MISSING] * len(body["items"])
    rows = [
        [str(i), event, str(item), *describe(item, attributes), "unknown" if item in unknown else ""]
        for i, (item, event) in enumerate(zip(body["items"], events, strict=True), start=1)
    ]
    return table(["#", "event", "item id", "category", "price", "in stock", ""], rows, right={0, 2, 4})


def answer_table(answer: dict[str, Any], attributes: pd.DataFrame) -> str:
    """The recommendations, best first, with their scores and attributes."""
    rows = [
        [str(rank), str(hit["item_id"]), f"{hit['score']:.3f}", *describe(hit["item_id"], attributes)]
        for rank, hit in enumerate(answer["items"], start=1)
    ]
    return table(["rank", "item id", "score", "category", "price", "in stock"], rows, right={0, 1, 2, 4})


def report(url: str, body: dict[str, Any], answer: dict[str, Any], attributes: pd.DataFrame) -> str:
    """What the demo prints: the request, the session sent and the answer."""
    options = {key: body[key] for key in ("k", "exclude_seen", "filters") if key in body}
    model = answer.get("model") or {}
    return "\n".join(
        [
            f"POST {url}/recommend  {json.dumps(options)}",
            f"\nsession sent ({len(body['items'])} events, oldest first):",
            session_table(body, attributes, list(answer.get("unknown_items") or [])),
            f"\nrecommended by {model.get('name', '?')} v{model.get('version', '?')}:",
            answer_table(answer, attributes),
        ]
    )


def run(bundle: str) -> dict[str, Any]:
    """Serve ``bundle`` on a free loopback port, POST one /recommend, print both, stop the service."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    serve = Path(sys.executable).with_name("shopformer-serve")
    command = [str(serve)] if serve.exists() else [sys.executable, "-m", "shopformer.serve.cli"]
    with tempfile.TemporaryFile() as log:  # the service's own lines, shown only when it fails
        server = subprocess.Popen(
            [*command, f"bundle={bundle}", f"port={port}", "log_level=warning"], stdout=log, stderr=log
        )
        try:
            _wait_healthy(url, server)
            body = demo_session()
            answer = _call(f"{url}/recommend", body)
        except (RuntimeError, OSError) as exc:
            raise RuntimeError(f"{exc}\n{_tail(log)}".rstrip()) from exc
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(report(url, body, answer, item_attributes(bundle)), flush=True)
    return answer


def _tail(log: Any, n: int = 2000) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-n:]


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
