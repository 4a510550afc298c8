"""Keeps the worker processes of one service on the same bundle after ``POST /admin/reload``.

A reload reaches one worker; that worker, once it has swapped, writes the source it loaded to a small
JSON file all workers share, and every worker checks that file about once a second and loads what
another worker published. Each worker keeps answering on its current bundle while it loads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("shopformer.serve")


class SharedSource:
    """The last published bundle source, in a JSON file: ``{"source": ..., "id": ...}``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.applied: str | None = None  # id of the last publication this worker acted on
        self._stamp: int | None = None
        self.poll()  # whatever is there already is the starting point, not news

    def publish(self, source: str) -> None:
        """Tell the other workers to load ``source`` (this worker has loaded it already)."""
        self.applied = uuid.uuid4().hex
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"source": source, "id": self.applied}))
        os.replace(tmp, self.path)

    def poll(self) -> str | None:
        """The source another worker published since the last call, else None."""
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            entry = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return None  # half-written by a crashed writer: wait for the next publication
        if not entry or entry.get("id") == self.applied:
            return None
        self.applied = entry.get("id")
        return entry.get("source")


async def follow(shared: SharedSource, load_and_swap: Callable[[str], Any], interval: float = 1.0) -> None:
    """Forever: every ``interval`` seconds, load and swap in a source another worker published."""
    while True:
        await asyncio.sleep(interval)
        source = shared.poll()
        if source is None:
            continue
        try:
            await asyncio.to_thread(load_and_swap, source)
        except Exception as exc:  # a bad bundle must not stop the poller
            log.warning("could not follow the reload to %s: %s", source, exc)
