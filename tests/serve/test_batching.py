"""Dynamic batching: answers reach the right caller, queued requests share a run, bad ones fail alone."""

from __future__ import annotations

import threading
import warnings

import pytest

from shopformer.serve.app import create_app
from shopformer.serve.batching import MicroBatcher
from shopformer.serve.rules import RequestError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


class Doubler:
    """A model whose batch run can be held open, so that later requests queue behind it."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.running = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, model, items):
        self.batches.append(list(items))
        self.running.set()
        self.release.wait(10)
        for i, item in enumerate(items):
            if item < 0:
                raise RequestError((i, "k"), f"must be a positive integer, got {item}")
        return [(model, 2 * item) for item in items]


def test_queued_requests_share_one_run_and_get_their_own_answers():
    run = Doubler(hold=True)
    sizes: list[int] = []
    batcher = MicroBatcher(run, max_batch=8, on_batch=sizes.append)
    first = batcher.submit("m", 100)
    assert run.running.wait(5)  # the worker is busy with the first request...
    queued = [batcher.submit("m", i) for i in range(10)]  # ...so these queue up
    run.release.set()
    assert first.result(5) == ("m", 200)
    assert [f.result(5) for f in queued] == [("m", 2 * i) for i in range(10)]
    assert run.batches == [[100], list(range(8)), [8, 9]]  # max_batch caps a run
    assert sizes == [1, 8, 2]


def test_a_refused_request_fails_alone_with_its_own_location():
    run = Doubler(hold=True)
    batcher = MicroBatcher(run)
    blocker = batcher.submit("m", 1)
    assert run.running.wait(5)
    futures = [batcher.submit("m", item) for item in (3, -1, 5, -7)]
    run.release.set()
    blocker.result(5)
    assert futures[0].result(5) == ("m", 6) and futures[2].result(5) == ("m", 10)
    for bad, value in ((futures[1], -1), (futures[3], -7)):
        with pytest.raises(RequestError) as caught:
            bad.result(5)
        assert caught.value.loc == ("k",) and str(value) in caught.value.message


def test_unexpected_errors_reach_every_caller_of_the_batch():
    def broken(model, items):
        raise RuntimeError("boom")

    batcher = MicroBatcher(broken)
    futures = [batcher.submit("m", i) for i in range(3)]
    for future in futures:
        with pytest.raises(RuntimeError, match="boom"):
            future.result(5)
    assert batcher.submit("m", 0).exception(5) is not None  # the worker survives and keeps answering


def test_each_model_answers_its_own_requests():
    run = Doubler(hold=True)
    batcher = MicroBatcher(run)
    batcher.submit("old", 0)
    assert run.running.wait(5)
    mixed = [batcher.submit(model, i) for i, model in enumerate(["old", "new", "old", "new"])]
    run.release.set()
    assert [f.result(5) for f in mixed] == [("old", 0), ("new", 2), ("old", 4), ("new", 6)]
    assert run.batches[1:] == [[0, 2], [1, 3]]  # one run per model, arrival order kept


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda model, items: items, max_batch=0)


def test_concurrent_http_requests_get_the_unbatched_answers(recommender, bundle):
    histories = [bundle.raw_ids[[i, i + 7, i + 19]].tolist() for i in range(1, 40)]
    plain = TestClient(create_app(recommender, admin_token="", batching=False))
    expected = [plain.post("/recommend", json={"items": h, "k": 5}).json() for h in histories]
    app = create_app(recommender, admin_token="", max_batch=16)
    answers: dict[int, dict] = {}

    with TestClient(app) as client:

        def ask(i: int) -> None:
            answers[i] = client.post("/recommend", json={"items": histories[i], "k": 5}).json()

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(histories))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = client.get("/metrics").text
    for i, want in enumerate(expected):  # same items; scores equal up to float summation order
        got = answers[i]
        assert [x["item_id"] for x in got["items"]] == [x["item_id"] for x in want["items"]]
        assert [x["score"] for x in got["items"]] == pytest.approx(
            [x["score"] for x in want["items"]], rel=1e-5
        )
        assert got["model"] == want["model"] and got["unknown_items"] == want["unknown_items"]
    assert "shopformer_batch_sessions_sum 39.0" in metrics  # every session went through the batcher
