"""Dynamic batching: single-session requests that arrive together share one encoder run and one search.

Whatever queued while the previous batch ran (up to ``max_batch``) is answered with one
``recommend_batch`` call per model. An idle service answers a lone request at once. A busy one
(:class:`Pacer`: requests keep arriving while batches compute) also waits up to ``max_wait``
seconds for company before it runs a batch (Triton's ``max_queue_delay``, but only under load): a
session answered alone costs about twice the CPU of one in a batch of eight, so without the wait a
service at half its batched capacity runs single sessions at ~95 % of a core and any other process
on the machine queues its requests for tens to hundreds of milliseconds. Two ways to run the batches:

- :class:`LoopBatcher` (the default): on the event loop itself. The process stays one thread, so
  nothing contends for the GIL and no request waits on a thread hand-off; use one worker process
  per core (``workers=N``).
- :class:`ThreadBatcher`: on one worker thread, so that the event loop parses requests while a
  batch computes; a single worker process then uses a little more than one core.

A request the model refuses (a :class:`RequestError` located at its batch position) fails alone:
the rest of its batch is answered again without it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from shopformer.errors import RequestError

BatchFunction = Callable[[Any, Sequence[Any]], Sequence[Any]]
MODES = ("loop", "thread")
SETTINGS = (*MODES, "off")  # the service's ``batching`` option: a mode, or no batching
MAX_WAIT_MS = 2.0  # the service's default ``max_wait_ms`` (see Pacer)


def answer(run: BatchFunction, model: Any, items: list[Any]) -> list[tuple[bool, Any]]:
    """``(ok, result or exception)`` per item: one ``run`` for all, again without any item it refuses."""
    outcomes: list[tuple[bool, Any] | None] = [None] * len(items)
    waiting = list(range(len(items)))
    while waiting:
        try:
            results = run(model, [items[i] for i in waiting])
        except RequestError as exc:
            position = exc.loc[0] if exc.loc and isinstance(exc.loc[0], int) else None
            if position is None or not 0 <= position < len(waiting):
                return _settle(outcomes, waiting, exc)
            outcomes[waiting.pop(position)] = (False, RequestError(exc.loc[1:], exc.message))
            continue
        except Exception as exc:  # every waiting request must hear about it
            return _settle(outcomes, waiting, exc)
        for i, result in zip(waiting, results, strict=True):
            outcomes[i] = (True, result)
        break
    return outcomes  # type: ignore[return-value]


def _settle(outcomes: list, waiting: list[int], exc: BaseException) -> list[tuple[bool, Any]]:
    for i in waiting:
        outcomes[i] = (False, exc)
    return outcomes


def _settle_futures(run: BatchFunction, model: Any, group: list[tuple[Any, Any]]) -> None:
    """Answer ``(item, future)`` pairs with one :func:`answer` call (asyncio or concurrent futures)."""
    outcomes = answer(run, model, [item for item, _ in group])
    for (_, future), (ok, value) in zip(group, outcomes, strict=True):
        future.set_result(value) if ok else future.set_exception(value)


def by_model(jobs: Sequence[tuple[Any, Any, Any]]) -> list[tuple[Any, list[tuple[Any, Any]]]]:
    """``(model, item, future)`` jobs grouped by model object (a reload may put two models in one
    batch), in arrival order: ``[(model, [(item, future), ...]), ...]``."""
    groups: dict[int, tuple[Any, list]] = {}
    for model, item, future in jobs:
        groups.setdefault(id(model), (model, []))[1].append((item, future))
    return list(groups.values())


def make_batcher(mode: str, run: BatchFunction, max_batch: int = 64, on_batch=None, max_wait: float = 0.0):
    """A :class:`LoopBatcher` (``mode="loop"``) or a :class:`ThreadBatcher` (``"thread"``); a busy one
    waits up to ``max_wait`` seconds for a batch to fill (see :class:`Pacer`)."""
    if mode not in MODES:
        raise ValueError(f"batching mode must be one of {MODES}, got {mode!r}")
    return (LoopBatcher if mode == "loop" else ThreadBatcher)(run, max_batch, on_batch, max_wait)


class Pacer:
    """Decides whether the next batch waits ``max_wait`` seconds for more requests: only while the
    service is busy, i.e. while the recent batches (an exponential average) held more than
    ``busy_batch`` requests each. A lone closed-loop client never overlaps with itself, so it is never
    made to wait; a steady stream that overlaps with the batches being computed is."""

    def __init__(self, max_wait: float = 0.002, busy_batch: float = 1.25, smoothing: float = 0.1) -> None:
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0 seconds, got {max_wait}")
        self.max_wait, self.busy_batch, self.smoothing = max_wait, busy_batch, smoothing
        self.mean_batch = 1.0

    def note(self, size: int) -> None:
        """Record the size of a batch just taken from the queue."""
        self.mean_batch += self.smoothing * (size - self.mean_batch)

    def wait(self, queued: int, max_batch: int) -> float:
        """Seconds to wait before taking a batch from a queue of ``queued`` requests (0: take it now)."""
        busy = self.mean_batch > self.busy_batch
        return self.max_wait if busy and queued < max_batch else 0.0


class _Batcher:
    def __init__(
        self,
        run: BatchFunction,
        max_batch: int = 64,
        on_batch: Callable[[int], None] | None = None,
        max_wait: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be positive, got {max_batch}")
        self.run, self.max_batch, self.on_batch = run, max_batch, on_batch
        self.pacer = Pacer(max_wait)

    def _taken(self, size: int) -> None:
        self.pacer.note(size)
        if self.on_batch is not None:
            self.on_batch(size)


class LoopBatcher(_Batcher):
    """``await batcher.submit(model, item)``: batches run on the submitting event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per event loop (a test client may run several): jobs waiting, and the drain task if any.
        self._pending: dict[asyncio.AbstractEventLoop, list] = {}
        self._drains: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}

    async def submit(self, model: Any, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.setdefault(loop, []).append((model, item, future))
        if loop not in self._drains:
            self._drains[loop] = loop.create_task(self._drain(loop))
        return await future

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while self._pending.get(loop):
                await self._settle_queue(loop)
                if wait := self.pacer.wait(len(self._pending[loop]), self.max_batch):
                    await asyncio.sleep(wait)
                    await self._settle_queue(loop)
                pending = self._pending[loop]
                jobs, self._pending[loop] = pending[: self.max_batch], pending[self.max_batch :]
                self._taken(len(jobs))
                for model, group in by_model(jobs):
                    _settle_futures(self.run, model, [(i, f) for i, f in group if not f.done()])
        finally:
            self._drains.pop(loop, None)
            if not self._pending.get(loop):
                self._pending.pop(loop, None)

    async def _settle_queue(self, loop: asyncio.AbstractEventLoop) -> None:
        """Requests the loop has already read are a few callbacks from joining: yield until the queue
        stops growing (or is full), so that they join this batch, not the next one."""
        waiting = 0
        while waiting != len(self._pending[loop]) < self.max_batch:
            waiting = len(self._pending[loop])
            await asyncio.sleep(0)


class ThreadBatcher(_Batcher):
    """``await batcher.submit(model, item)``: batches run on one worker thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._starting = threading.Lock()

    async def submit(self, model: Any, item: Any) -> Any:
        return await asyncio.wrap_future(self.submit_future(model, item))

    def submit_future(self, model: Any, item: Any) -> Future:
        """Queue one item for ``model``; the future holds its answer or the error that concerns it."""
        future: Future = Future()
        self._queue.put((model, item, future))
        if self._worker is None:
            with self._starting:
                if self._worker is None:
                    self._worker = threading.Thread(
                        target=self._serve, name="shopformer-batcher", daemon=True
                    )
                    self._worker.start()
        return future

    def _serve(self) -> None:
        while True:
            jobs = [self._queue.get()]
            if wait := self.pacer.wait(len(jobs) + self._queue.qsize(), self.max_batch):
                time.sleep(wait)
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._taken(len(jobs))
            for model, group in by_model(jobs):
                _settle_futures(
                    self.run, model, [(i, f) for i, f in group if f.set_running_or_notify_cancel()]
                )
