"""`python -m shopformer.serve.demo`: the end of `make demo` (serve, one real request, stop)."""

from __future__ import annotations

import json

import pytest

from shopformer.serve import demo


def test_demo_session_is_a_real_synthetic_session_with_a_cart():
    body = demo.demo_session(n_events=6)
    assert len(body["items"]) == len(body["event_types"]) == len(body["timestamps"]) == 6
    assert "cart" in body["event_types"]
    assert body["timestamps"] == sorted(body["timestamps"])


def test_demo_serves_the_bundle_and_answers_one_request(bundle, monkeypatch, capsys):
    # The hand-made test bundle does not know the synthetic ids: the service reports them back.
    monkeypatch.setattr(demo, "demo_session", lambda: {"items": [1003, 1006, 99], "k": 3})
    answer = demo.run(str(bundle.path))
    assert len(answer["items"]) == 3 and answer["unknown_items"] == [99]
    assert "POST http://127.0.0.1:" in capsys.readouterr().out


def test_bundle_is_read_from_the_training_output(tmp_path):
    out = tmp_path / "train.out"
    out.write_text("epoch 0 | ...\n" + json.dumps({"run_id": "x", "bundle": "/b"}) + "\n")
    assert demo.bundle_from_run_output(str(out)) == "/b"
    out.write_text(json.dumps({"run_id": "x"}) + "\n")
    with pytest.raises(RuntimeError, match="no JSON line with a 'bundle'"):
        demo.bundle_from_run_output(str(out))
    assert demo.main([]) == 2
