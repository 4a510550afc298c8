"""The file through which worker processes follow each other's reloads."""

from __future__ import annotations

import os
import time

from shopformer.serve.shared_reload import SharedSource


def _touch_later(path) -> None:
    later = time.time_ns() + 1_000_000_000  # mtime resolution: make the change visible
    os.utime(path, ns=(later, later))


def test_a_publication_reaches_the_others_once_and_not_its_author(tmp_path):
    path = tmp_path / "source.json"
    author, follower = SharedSource(path), SharedSource(path)
    assert follower.poll() is None  # nothing published yet
    author.publish("/bundles/v2")
    assert author.poll() is None  # its own publication
    assert follower.poll() == "/bundles/v2"
    assert follower.poll() is None  # once
    _touch_later(path)
    assert follower.poll() is None  # same publication, newer timestamp


def test_what_is_there_at_start_is_not_news_and_garbage_is_ignored(tmp_path):
    path = tmp_path / "source.json"
    SharedSource(path).publish("/bundles/v1")
    late = SharedSource(path)  # a worker started after that reload
    assert late.poll() is None
    path.write_text('{"source": "/bundles/v')  # a writer that crashed half-way
    _touch_later(path)
    assert late.poll() is None
    path.write_text('{"source": "/bundles/v3", "id": "abc"}')
    _touch_later(path)
    assert late.poll() == "/bundles/v3"
