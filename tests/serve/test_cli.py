"""Console scripts and the torch-free import contract, partly as real subprocesses."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from shopformer.serve.cli import recommend_main

BIN = Path(sys.executable).parent
SERVE_MODULES = [
    "",
    ".bundle",
    ".index",
    ".rules",
    ".sessions",
    ".encoding",
    ".retrieval",
    ".onnx_session",
    ".mlflow_source",
    ".journey",
    ".recommender",
    ".schemas",
    ".prometheus",
    ".micro_batching",
    ".shared_reload",
    ".workers",
    ".app",
    ".batch_scoring",
    ".cli",
]


def test_serving_imports_no_torch():
    imports = "; ".join(f"import shopformer.serve{m}" for m in SERVE_MODULES)
    heavy = ("torch", "lightning", "pytorch_lightning", "mlflow")
    check = (
        f"import sys; heavy = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r} "
        "or m.startswith(('shopformer.train', 'shopformer.models'))); assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", f"{imports}; {check}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def run_cli(capsys, *args) -> tuple[int, str]:
    code = recommend_main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_recommend_cli_list_layout(bundle, recommender, tmp_path, capsys):
    raw = bundle.raw_ids
    sessions = [raw[[1, 2, 3]].tolist(), [raw[50], 999_999], [999_999], raw[[7]].tolist()]
    pd.DataFrame({"session_id": ["a", "b", "c", "d"], "items": sessions}).to_parquet(tmp_path / "in.parquet")
    code, err = run_cli(
        capsys,
        f"bundle={bundle.path}",
        f"input={tmp_path / 'in.parquet'}",
        f"output={tmp_path / 'o.parquet'}",
        "k=4",
    )
    assert code == 0, err
    out = pd.read_parquet(tmp_path / "o.parquet")
    assert list(out.columns) == ["session_id", "rank", "item_id", "score"]
    assert out.groupby("session_id")["rank"].apply(list).to_dict() == {s: [1, 2, 3, 4] for s in "abd"}
    for key, history in zip("abd", [sessions[0], sessions[1][:1], sessions[3]], strict=True):
        expected = recommender.recommend(history, k=4).items
        rows = out[out.session_id == key]
        assert rows["item_id"].tolist() == [i for i, _ in expected]
        np.testing.assert_allclose(rows["score"], [s for _, s in expected], rtol=1e-6)
    assert "4 sessions -> 12 rows" in err and "2 with unknown items, 1 with no known item" in err


def test_recommend_cli_long_layout(journey_bundle, journey_recommender, tmp_path, capsys):
    events = pd.DataFrame(
        {
            "user_id": [7, 7, 9, 7, 9],
            "item_id": ["sku-0005", "sku-0009", "sku-0100", "sku-0002", "sku-0200"],
            "timestamp": pd.to_datetime([300, 100, 50, 200, 60], unit="s"),
            "event_type": ["cart", "view", "view", "purchase", "view"],
        }
    )
    events.to_parquet(tmp_path / "events.parquet")
    args = [
        f"bundle={journey_bundle.path}",
        f"input={tmp_path / 'events.parquet'}",
        f"output={tmp_path / 'r.parquet'}",
    ]
    code, err = run_cli(capsys, *args, "k=3", "batch_size=1")
    assert code == 0, err
    out = pd.read_parquet(tmp_path / "r.parquet")
    assert out["user_id"].tolist() == [7, 7, 7, 9, 9, 9]
    # user 7 in time order: sku-0009 (100), sku-0002 (200), sku-0005 (300)
    expected = journey_recommender.recommend(
        ["sku-0009", "sku-0002", "sku-0005"], ["view", "purchase", "cart"], [100, 200, 300], k=3
    )
    assert out["item_id"].tolist()[:3] == [i for i, _ in expected.items]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"visit": [1], "items": [[1003]]}), "needs a session_id or user_id column"),
        (pd.DataFrame({"session_id": [1], "products": [[1003]]}), "needs an 'items' list column"),
    ],
)
def test_recommend_cli_missing_column(bundle, tmp_path, capsys, frame, message):
    frame.to_parquet(tmp_path / "in.parquet")
    code, err = run_cli(
        capsys, f"bundle={bundle.path}", f"input={tmp_path / 'in.parquet'}", f"output={tmp_path}/o"
    )
    assert code == 2
    assert err.count("\n") == 1 and message in err and "in.parquet" in err


def test_recommend_cli_usage_errors(bundle, tmp_path, capsys):
    assert run_cli(capsys, f"bundle={bundle.path}", "input=x")[0] == 2  # output missing
    code, err = run_cli(capsys, f"bundle={tmp_path}", f"input={tmp_path / 'none.parquet'}", "output=o")
    assert code == 2 and "none.parquet: no such file" in err
    pd.DataFrame({"session_id": [1], "items": [[1003]]}).to_parquet(tmp_path / "in.parquet")
    code, err = run_cli(capsys, f"bundle={tmp_path}", f"input={tmp_path / 'in.parquet'}", "output=o")
    assert code == 2 and "no manifest.json" in err
    code, err = run_cli(capsys, f"bundle={bundle.path}", "input=x", "output=o", "k=many")
    assert code == 2 and "k='many'" in err


def test_recommend_console_script_error_is_one_line(bundle, tmp_path):
    pd.DataFrame({"session_id": [1], "item": [1003]}).to_parquet(tmp_path / "in.parquet")
    result = subprocess.run(
        [
            BIN / "shopformer-recommend",
            f"bundle={bundle.path}",
            f"input={tmp_path / 'in.parquet'}",
            "output=o",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("shopformer-recommend: error: input ") and result.stderr.count("\n") == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_console_script_answers_http(bundle, recommender, workers):
    port = free_port()
    server = subprocess.Popen(
        [
            BIN / "shopformer-serve",
            f"bundle={bundle.path}",
            f"port={port}",
            "log_level=warning",
            f"workers={workers}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                health = httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "shopformer-serve did not start"
                time.sleep(0.1)
        assert health.json()["model"] == {"name": "handmade", "version": "1"}
        history = bundle.raw_ids[[2, 4]].tolist()
        body = httpx.post(f"{url}/recommend", json={"items": history, "k": 3}, timeout=10).json()
        assert [i["item_id"] for i in body["items"]] == [
            i for i, _ in recommender.recommend(history, k=3).items
        ]
    finally:
        server.terminate()
        server.wait(timeout=20)
        server.stdout.close()
