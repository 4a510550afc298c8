"""Dynamic batching: single-session requests that arrive together share one encoder run and one search.

One worker thread takes every request queued since its last batch (up to ``max_batch``) and answers
them with one ``recommend_batch`` call per model, so there is no waiting timer: an idle service answers
a lone request at once, and a busy one batches whatever queued while the previous batch ran (the way
Triton's and TF Serving's dynamic batchers behave with a zero queue delay). The event loop keeps
parsing requests while the worker computes.

A request the model refuses (a :class:`RequestError` located at its batch position) fails alone:
the rest of its batch is answered again without it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from shopformer.serve.rules import RequestError

BatchFunction = Callable[[Any, Sequence[Any]], Sequence[Any]]


class MicroBatcher:
    """``submit(model, item)`` returns a future; ``run(model, items)`` answers a list of items at once."""

    def __init__(
        self, run: BatchFunction, max_batch: int = 64, on_batch: Callable[[int], None] | None = None
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be positive, got {max_batch}")
        self.run, self.max_batch, self.on_batch = run, max_batch, on_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._starting = threading.Lock()

    def submit(self, model: Any, item: Any) -> Future:
        """Queue one item for ``model``; the future holds its answer or the error that concerns it."""
        future: Future = Future()
        self._queue.put((model, item, future))
        if self._worker is None:
            self._start()
        return future

    def _start(self) -> None:
        with self._starting:
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name="shopformer-batcher", daemon=True)
                self._worker.start()

    def _serve(self) -> None:
        while True:
            jobs = [self._queue.get()]
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if self.on_batch is not None:
                self.on_batch(len(jobs))
            for model, group in _by_model(jobs):
                self._answer(model, group)

    def _answer(self, model: Any, jobs: list[tuple[Any, Future]]) -> None:
        jobs = [(item, future) for item, future in jobs if future.set_running_or_notify_cancel()]
        while jobs:
            try:
                results = self.run(model, [item for item, _ in jobs])
            except RequestError as exc:
                position = exc.loc[0] if exc.loc and isinstance(exc.loc[0], int) else None
                if position is None or not 0 <= position < len(jobs):
                    _fail(jobs, exc)
                    return
                jobs.pop(position)[1].set_exception(RequestError(exc.loc[1:], exc.message))
                continue
            except BaseException as exc:  # noqa: BLE001 - every waiting request must hear about it
                _fail(jobs, exc)
                return
            for (_, future), result in zip(jobs, results, strict=True):
                future.set_result(result)
            return


def _by_model(jobs: list[tuple[Any, Any, Future]]) -> list[tuple[Any, list[tuple[Any, Future]]]]:
    """Jobs grouped by model object (a reload may put two models in one batch), in arrival order."""
    groups: dict[int, tuple[Any, list]] = {}
    for model, item, future in jobs:
        groups.setdefault(id(model), (model, []))[1].append((item, future))
    return list(groups.values())


def _fail(jobs: list[tuple[Any, Future]], exc: BaseException) -> None:
    for _, future in jobs:
        future.set_exception(exc)
