"""Journey scoring in serving (no torch): journey.onnx in a bundle, POST /journey, batch scores to Parquet.

The bundle is the hand-made journey bundle of conftest.py plus a hand-made ``journey.onnx``: heads on the
mean of the token embeddings, so a numpy reference is exact.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from shopformer.data.features import gap_buckets
from shopformer.errors import RequestError
from shopformer.serve.app import create_app
from shopformer.serve.bundle import BundleError, read_manifest, write_manifest
from shopformer.serve.cli import recommend_main
from shopformer.serve.journey import NoJourneyModel
from shopformer.serve.recommender import Recommender
from tests.serve.conftest import EVENT_VOCAB, TestBundle

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

CLASSES = EVENT_VOCAB[1:]


@pytest.fixture(scope="module")
def scored(scored_journey):
    """(bundle with journey.onnx, its heads matrix, a Recommender on it, its path)."""
    return scored_journey


def reference(bundle: TestBundle, heads: np.ndarray, raw, events, stamps):
    ids = bundle.internal(raw)
    starts = np.zeros(len(ids), dtype=bool)
    starts[0] = True
    tokens = bundle.items[ids] + bundle.events[[EVENT_VOCAB.index(e) for e in events]]
    tokens = tokens + bundle.gaps[gap_buckets(np.asarray(stamps), starts)]
    z = tokens[-bundle.max_len :].mean(axis=0) @ heads
    p = np.exp(z[:3] - z[:3].max())
    return p / p.sum(), 1 / (1 + np.exp(-z[3])), 1 / (1 + np.exp(-z[4]))


@pytest.fixture
def session(journey_bundle):
    raw = journey_bundle.raw_ids[[4, 9, 9, 20]].tolist()
    return {"items": raw, "event_types": ["view", "view", "cart", "view"], "timestamps": [0, 40, 55, 400]}


def test_scores_match_the_reference(scored, session):
    bundle, heads, rec, _ = scored
    (result,) = rec.journey_batch([session])
    events, conversion, abandonment = reference(
        bundle, heads, session["items"], session["event_types"], session["timestamps"]
    )
    assert list(result.event_probs) == CLASSES
    assert np.allclose(list(result.event_probs.values()), events, atol=1e-5)
    assert sum(result.event_probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.conversion == pytest.approx(conversion, abs=1e-5)
    assert result.cart_open and result.abandonment == pytest.approx(abandonment, abs=1e-5)
    assert result.next_event_type == CLASSES[int(np.argmax(events))]


def test_abandonment_only_with_an_open_cart(scored, session):
    _, _, rec, _ = scored
    closed = {**session, "event_types": ["view", "cart", "purchase", "view"]}
    (result,) = rec.journey_batch([closed])
    assert not result.cart_open and result.abandonment is None and result.conversion is not None


def test_unknown_items_are_dropped_and_reported(scored, session):
    _, _, rec, _ = scored
    only_unknown = {"items": ["nope"], "event_types": ["view"], "timestamps": [1]}
    mixed = {**session, "items": [*session["items"][:3], "nope"]}
    first, second = rec.journey_batch([only_unknown, mixed])
    assert first.event_probs is None and first.unknown_items == ["nope"]
    assert second.unknown_items == ["nope"] and second.conversion is not None


def test_bundle_without_journey_model(recommender):
    assert recommender.journey is None
    with pytest.raises(NoJourneyModel, match="no journey model"):
        recommender.journey_batch([{"items": [1]}])


def test_journey_file_needs_its_manifest_entry(scored, tmp_path):
    _, _, _, path = scored
    copy = tmp_path / "bundle"
    shutil.copytree(path, copy)
    manifest = read_manifest(copy)
    del manifest["journey"]
    write_manifest(copy, manifest)
    with pytest.raises(BundleError, match="journey"):
        Recommender.load(copy)


@pytest.fixture(scope="module")
def client(scored):
    return TestClient(create_app(scored[2], admin_token=""))


def test_post_journey(client, session):
    response = client.post("/journey", json=session)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["next_event_probs"]) == set(CLASSES)
    assert sum(body["next_event_probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert 0 < body["conversion"] < 1 and body["cart_open"] is True
    assert body["model"]["name"] == "handmade-journey"
    batch = client.post("/journey/batch", json={"sessions": [session, session]}).json()
    assert len(batch["results"]) == 2 and batch["results"][0]["conversion"] == body["conversion"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"items": []}, "items"),
        ({"event_types": ["view"]}, "event_types"),
        ({"event_types": ["view", "view", "teleport", "view"]}, "event_types"),
        ({"timestamps": None}, "timestamps"),
        ({"timestamps": [0, 40, 30, 400]}, "timestamps"),
        ({"timestamps": [0, 40, "x", 400]}, "timestamps"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_journey_requests_are_422_naming_the_field(client, session, change, field):
    body = {k: v for k, v in {**session, **change}.items() if v is not None}
    response = client.post("/journey", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(field in map(str, d["loc"]) for d in detail), detail


def test_bad_session_in_a_batch_is_located(client, session):
    bad = {**session, "timestamps": [5, 4, 3, 2]}
    response = client.post("/journey/batch", json={"sessions": [session, bad]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "sessions", 1, "timestamps"]


def test_journey_on_a_bundle_without_it_is_404(recommender):
    response = TestClient(create_app(recommender, admin_token="")).post("/journey", json={"items": [1003]})
    assert response.status_code == 404 and "journey" in response.json()["detail"]


def test_batch_scores_to_parquet(scored, session, tmp_path, capsys):
    _, _, rec, path = scored
    rows = [
        {"session_id": f"s{i}", "item_id": item, "event_type": kind, "timestamp": stamp}
        for i in range(3)
        for item, kind, stamp in zip(
            session["items"], session["event_types"], session["timestamps"], strict=True
        )
    ]
    rows.append({"session_id": "lost", "item_id": "nope", "event_type": "view", "timestamp": 0})
    pd.DataFrame(rows).to_parquet(tmp_path / "events.parquet")
    out = tmp_path / "scores.parquet"
    args = ["task=journey", f"bundle={path}", f"input={tmp_path / 'events.parquet'}", f"output={out}"]
    assert recommend_main(args) == 0
    frame = pd.read_parquet(out)
    assert frame["session_id"].tolist() == ["s0", "s1", "s2", "lost"]
    assert [f"p_{c}" for c in CLASSES] == [c for c in frame.columns if c.startswith("p_")]
    (expected,) = rec.journey_batch([session])
    assert frame["conversion"].iloc[0] == pytest.approx(expected.conversion, abs=1e-6)
    assert frame[[f"p_{c}" for c in CLASSES]].iloc[:3].sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-5)
    assert np.isnan(frame["conversion"].iloc[3]) and frame["unknown_items"].iloc[3] == 1
    assert "3 scored" in capsys.readouterr().err
    assert recommend_main(["task=teleport", f"bundle={path}", "input=x", "output=y"]) == 2


def test_batch_error_names_the_session(scored, tmp_path, capsys):
    bundle, _, _, path = scored
    items = bundle.raw_ids[[1, 2]].tolist()
    frame = pd.DataFrame({"session_id": ["a", "a"], "item_id": items, "event_type": ["view", "warp"]})
    frame.to_parquet(tmp_path / "bad.parquet")
    args = [
        "task=journey",
        f"bundle={path}",
        f"input={tmp_path / 'bad.parquet'}",
        f"output={tmp_path / 'o.pq'}",
    ]
    assert recommend_main(args) == 2
    err = capsys.readouterr().err
    assert "'a'" in err and "event_types" in err and "warp" in err


def test_request_errors_are_request_errors(scored):
    with pytest.raises(RequestError):
        scored[2].journey_batch([{"items": [1003], "event_types": ["view", "view"]}])


def test_batch_journey_scores_of_a_bundle_without_journey_model_are_a_one_line_error(
    journey_bundle, session, tmp_path, capsys
):
    rows = [{"session_id": "s", "item_id": i, "event_type": "view", "timestamp": 0} for i in session["items"]]
    pd.DataFrame(rows).to_parquet(tmp_path / "events.parquet")
    events, out = tmp_path / "events.parquet", tmp_path / "o"
    args = [f"bundle={journey_bundle.path}", f"input={events}", f"output={out}"]
    assert recommend_main(["task=journey", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no journey model (journey.onnx)" in err[0]
    assert not out.exists()
