"""Several server processes behind one port: the parent process accepts every connection and hands
it to the worker that holds the fewest open connections (Envoy's "exact" connection balance).

Why not the usual ways. uvicorn's ``--workers`` shares one listening socket, and when many
connections open at once the first worker to wake accepts them all: with 32 keep-alive clients, two
workers served no faster than one. One ``SO_REUSEPORT`` socket per worker (what this module did
before) spreads connections by a hash of their addresses, so 32 connections split 20 / 12 about as
often as 16 / 16; keep-alive connections live long, so the split at accept time is the split of the
load, and at half capacity the worker with 20 answered with p99 36 ms against 25 ms for the other
(benchmarks/RESULTS.md, issue 19). Handing over an accepted connection costs the parent one
``sendmsg`` per connection, nothing per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any

import uvicorn

BACKLOG = 2048
READY = b"ready"
HANDOVER = b"c"  # the one data byte that carries a connection's descriptor


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening: a port in use fails here, before any
    worker starts, and nothing connects until :func:`run_workers` listens (every worker ready)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class Balancer:
    """Picks the worker for the next connection: the fewest open connections (handed over minus
    closed, which the workers count into the shared ``closed``); ties go round-robin."""

    def __init__(self, closed: Sequence[int]) -> None:
        self.closed = closed
        self.handed = [0] * len(closed)
        self.next = 0

    def open_connections(self) -> list[int]:
        return [handed - closed for handed, closed in zip(self.handed, self.closed, strict=True)]

    def pick(self) -> int:
        n, open_now = len(self.handed), self.open_connections()
        worker = min(((self.next + step) % n for step in range(n)), key=open_now.__getitem__)
        self.handed[worker] += 1
        self.next = (worker + 1) % n
        return worker


class HandedServer(uvicorn.Server):
    """A uvicorn server on no socket of its own: it serves the connections that arrive as file
    descriptors on ``channel``, and counts each one it closes into ``closed[index]``."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket, closed: Any, index: int) -> None:
        super().__init__(config)
        self.channel, self.closed, self.index = channel, closed, index

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # lifespan, protocol class; listens on nothing
        loop = asyncio.get_running_loop()
        self.channel.setblocking(False)
        loop.add_reader(self.channel.fileno(), self._receive, loop)
        self.channel.send(READY)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().remove_reader(self.channel.fileno())
        await super().shutdown(sockets)

    def _protocol(self) -> asyncio.Protocol:
        """uvicorn's HTTP protocol for one connection, as its own ``create_protocol`` builds it,
        with a count of the connection's close for the parent's balance."""
        protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )
        lost = protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            self.closed[self.index] += 1
            lost(exc)

        protocol.connection_lost = connection_lost  # type: ignore[method-assign]
        return protocol

    def _receive(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.channel, len(HANDOVER), 1)
            except BlockingIOError:
                return
            if not data:  # the parent is gone: no more connections will come
                loop.remove_reader(self.channel.fileno())
                self.should_exit = True
                return
            for fd in fds:
                loop.create_task(self._connect(loop, socket.socket(fileno=fd)))

    async def _connect(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(self._protocol, sock)
        except OSError:  # the client left before its connection was set up
            sock.close()
            self.closed[self.index] += 1


def _worker(
    app_factory: Callable[[], Any],
    channel: socket.socket,
    closed: Any,
    index: int,
    log_level: str,
    env: dict[str, str],
) -> None:
    os.environ.update(env)
    config = uvicorn.Config(app_factory(), log_level=log_level)
    HandedServer(config, channel, closed, index).run()


def _hand_over(listener: socket.socket, channels: list[socket.socket], balancer: Balancer) -> None:
    """The parent's accept loop (a thread), until the listener is shut down."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        # The worker holds its own copy once it is sent; a worker gone: run_workers stops the others.
        with conn, contextlib.suppress(OSError):
            socket.send_fds(channels[balancer.pick()], [HANDOVER], [conn.fileno()])


def _until_ready(channels: list[socket.socket], processes: list[Any]) -> list[Any]:
    """Wait until every worker says it serves: [] then; as soon as one exits first, the workers that
    have exited."""
    waiting = dict(zip(channels, processes, strict=True))
    sentinels = {p.sentinel: p for p in processes}
    while waiting:
        ready = wait([*waiting, *sentinels])
        if ended := [sentinels[s] for s in ready if s in sentinels]:
            return ended
        for channel in [c for c in waiting if c in ready]:
            if channel.recv(len(READY)) != READY:  # its end closed: it is exiting
                return [waiting[channel]]
            del waiting[channel]
    return []


def run_workers(
    app_factory: Callable[[], Any], workers: int, host: str, port: int, log_level: str, env: dict[str, str]
) -> int:
    """Serve ``app_factory()`` from ``workers`` spawned processes until one exits or this process is
    told to stop (SIGTERM / SIGINT, passed on to every worker); 0 when told to stop or when the first
    worker to exit exited cleanly. This process listens on (host, port) once every worker is ready,
    and hands each connection it accepts to a worker (:class:`Balancer`)."""
    context = multiprocessing.get_context("spawn")  # no fork of a loaded onnxruntime session
    listener = bound_socket(host, port)
    closed = context.RawArray("q", workers)  # per worker, connections it has closed
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(workers)]
    processes = [
        context.Process(
            target=_worker, args=(app_factory, theirs, closed, i, log_level, env), name=f"worker-{i}"
        )
        for i, (_, theirs) in enumerate(pairs)
    ]
    told: list[int] = []

    def stop(signum: int | None = None, frame: Any = None) -> None:
        if signum is not None:
            told.append(signum)
        with contextlib.suppress(OSError):  # wakes the accept loop; new clients are refused
            listener.shutdown(socket.SHUT_RDWR)
        for process in processes:
            if process.is_alive():
                process.terminate()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for process in processes:
            process.start()
        for _, theirs in pairs:
            theirs.close()  # the worker has its own copy; its exit now closes the channel
        channels = [ours for ours, _ in pairs]
        ended = _until_ready(channels, processes)
        if not ended and not told:
            listener.listen(BACKLOG)
            threading.Thread(
                target=_hand_over, args=(listener, channels, Balancer(closed)), daemon=True
            ).start()
            finished = wait([p.sentinel for p in processes])
            ended = [p for p in processes if p.sentinel in finished]
        stop()
        for process in processes:
            process.join(15)
            if process.is_alive():
                process.kill()
                process.join()
        # Stopped on request: uvicorn re-raises the SIGTERM it got once it has shut down cleanly.
        return 0 if told or not ended or not ended[0].exitcode else 1
    finally:
        listener.close()
        for ours, _ in pairs:
            ours.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
