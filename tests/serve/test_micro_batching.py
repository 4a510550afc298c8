"""Dynamic batching: answers reach the right caller, queued requests share a run, bad ones fail alone."""

from __future__ import annotations

import asyncio
import threading
import warnings

import pytest

from shopformer.errors import RequestError
from shopformer.serve.app import create_app
from shopformer.serve.micro_batching import LoopBatcher, ThreadBatcher, answer, make_batcher

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
    batcher = ThreadBatcher(run, max_batch=8, on_batch=sizes.append)
    first = batcher.submit_future("m", 100)
    assert run.running.wait(5)  # the worker is busy with the first request...
    queued = [batcher.submit_future("m", i) for i in range(10)]  # ...so these queue up
    run.release.set()
    assert first.result(5) == ("m", 200)
    assert [f.result(5) for f in queued] == [("m", 2 * i) for i in range(10)]
    assert run.batches == [[100], list(range(8)), [8, 9]]  # max_batch caps a run
    assert sizes == [1, 8, 2]


def test_a_refused_item_fails_alone_with_its_own_location():
    outcomes = answer(Doubler(), "m", [3, -1, 5, -7])
    assert outcomes[0] == (True, ("m", 6)) and outcomes[2] == (True, ("m", 10))
    for (ok, error), value in ((outcomes[1], -1), (outcomes[3], -7)):
        assert not ok and isinstance(error, RequestError)
        assert error.loc == ("k",) and str(value) in error.message


def test_unexpected_errors_reach_every_caller_of_the_batch():
    def broken(model, items):
        raise RuntimeError("boom")

    assert [ok for ok, _ in answer(broken, "m", [1, 2])] == [False, False]
    batcher = ThreadBatcher(broken)
    futures = [batcher.submit_future("m", i) for i in range(3)]
    for future in futures:
        with pytest.raises(RuntimeError, match="boom"):
            future.result(5)
    assert batcher.submit_future("m", 0).exception(5) is not None  # the worker survives


def test_each_model_answers_its_own_requests():
    run = Doubler(hold=True)
    batcher = ThreadBatcher(run)
    batcher.submit_future("old", 0)
    assert run.running.wait(5)
    mixed = [batcher.submit_future(model, i) for i, model in enumerate(["old", "new", "old", "new"])]
    run.release.set()
    assert [f.result(5) for f in mixed] == [("old", 0), ("new", 2), ("old", 4), ("new", 6)]
    assert run.batches[1:] == [[0, 2], [1, 3]]  # one run per model, arrival order kept


def test_the_loop_batcher_answers_what_queued_together_in_one_run():
    run = Doubler()
    sizes: list[int] = []
    batcher = LoopBatcher(run, max_batch=4, on_batch=sizes.append)

    async def main():
        return await asyncio.gather(
            *(batcher.submit("m", i) for i in (1, 2, -3, 4, 5, 6)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert results[:2] == [("m", 2), ("m", 4)] and results[3:] == [("m", 8), ("m", 10), ("m", 12)]
    assert isinstance(results[2], RequestError) and results[2].loc == ("k",)
    assert sizes == [4, 2]  # six requests, max_batch 4
    assert run.batches == [[1, 2, -3, 4], [1, 2, 4], [5, 6]]  # the refused one left, the rest again

    async def later():  # nothing left behind: a new burst starts a new drain
        return await batcher.submit("m", 7)

    assert asyncio.run(later()) == ("m", 14)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        ThreadBatcher(lambda model, items: items, max_batch=0)
    with pytest.raises(ValueError, match="batching mode"):
        make_batcher("sometimes", lambda model, items: items)


@pytest.mark.parametrize("mode", ["loop", "thread"])
def test_concurrent_http_requests_get_the_unbatched_answers(recommender, bundle, mode):
    histories = [bundle.raw_ids[[i, i + 7, i + 19]].tolist() for i in range(1, 40)]
    plain = TestClient(create_app(recommender, admin_token="", batching="off"))
    expected = [plain.post("/recommend", json={"items": h, "k": 5}).json() for h in histories]
    app = create_app(recommender, admin_token="", batching=mode, max_batch=16)
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
