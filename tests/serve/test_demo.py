"""`python -m shopformer.serve.demo`: the end of `make demo` (serve, one real request, stop)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shopformer.serve import demo
from tests.serve.conftest import make_bundle


def test_demo_session_is_a_real_synthetic_session_with_a_cart():
    body = demo.demo_session(n_events=6)
    assert len(body["items"]) == len(body["event_types"]) == len(body["timestamps"]) == 6
    assert "cart" in body["event_types"]
    assert body["timestamps"] == sorted(body["timestamps"])


def _expected(bundle, item_id) -> list[str]:
    """category, price, in stock of a raw id as the demo should print them (from the test bundle)."""
    row = bundle.vocab.set_index("item_id").loc[item_id]
    price = "-" if np.isnan(row["price"]) else f"{row['price']:.2f}"
    return [row["category"], price, "yes" if row["in_stock"] else "no"]


def _rows(out: str, title: str) -> list[list[str]]:
    """The rows (cells split on runs of spaces) of the table printed under the line starting ``title``."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 2  # title, header
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_demo_prints_the_session_and_the_answer_with_item_attributes(bundle, monkeypatch, capsys):
    # 1003 has no price in the test bundle (every 17th item); 99 is unknown to it.
    session = {"items": [1003, 1051, 1006, 99], "event_types": ["view", "view", "cart", "view"], "k": 5}
    monkeypatch.setattr(demo, "demo_session", lambda: session)
    answer = demo.run(str(bundle.path))
    out = capsys.readouterr().out
    assert len(answer["items"]) == 5 and answer["unknown_items"] == [99]
    assert out.startswith("POST http://127.0.0.1:") and '"k": 5' in out.splitlines()[0]

    sent = _rows(out, "session sent (4 events")
    assert [row[:3] for row in sent] == [
        ["1", "view", "1003"],
        ["2", "view", "1051"],
        ["3", "cart", "1006"],
        ["4", "view", "99"],
    ]
    for row, item in zip(sent[:3], session["items"][:3], strict=True):
        assert row[3:] == _expected(bundle, item)
    assert sent[0][4] == "-"  # no price: said, not invented
    assert sent[3][3:] == ["-", "-", "-", "unknown"]

    ranked = _rows(out, "recommended by handmade v1")
    assert [int(row[0]) for row in ranked] == [1, 2, 3, 4, 5]
    assert [int(row[1]) for row in ranked] == [hit["item_id"] for hit in answer["items"]]
    for row, hit in zip(ranked, answer["items"], strict=True):
        assert float(row[2]) == pytest.approx(hit["score"], abs=5e-4)
        assert row[3:] == _expected(bundle, hit["item_id"])


def test_attributes_the_bundle_lacks_are_dashes(tmp_path):
    lean = make_bundle(tmp_path / "lean", n_items=20, drop_attributes=("price", "in_stock"))
    attributes = demo.item_attributes(str(lean.path))
    assert demo.describe(1003, attributes) == ["c1", "-", "-"]
    assert demo.describe(1003, demo.item_attributes("models:/shop/1")) == ["-", "-", "-"]
    table = demo.table(["rank", "item"], [["1", "a"], ["10", "bbb"]], right={0})
    assert table.splitlines() == ["rank  item", "   1  a", "  10  bbb"]


def test_bundle_is_read_from_the_training_output(tmp_path):
    out = tmp_path / "train.out"
    out.write_text("epoch 0 | ...\n" + json.dumps({"run_id": "x", "bundle": "/b"}) + "\n")
    assert demo.bundle_from_run_output(str(out)) == "/b"
    out.write_text(json.dumps({"run_id": "x"}) + "\n")
    with pytest.raises(RuntimeError, match="no JSON line with a 'bundle'"):
        demo.bundle_from_run_output(str(out))
    assert demo.main([]) == 2
