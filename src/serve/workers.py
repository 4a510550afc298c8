"""Several server processes on one port, each listening on its own ``SO_REUSEPORT`` socket.

uvicorn's ``--workers`` shares one listening socket, and when many connections open at once the
first worker to wake accepts them all: measured with 32 keep-alive clients, two workers served no
faster than one. With a socket per process the kernel spreads new connections across the processes.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port) that other processes may bind as well."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _worker(
    app_factory: Callable[[], Any], host: str, port: int, log_level: str, env: dict[str, str]
) -> None:
    import uvicorn  # lazy: imported in the worker process, which needs it; the parent does not

    os.environ.update(env)
    sock = reuseport_socket(host, port)
    config = uvicorn.Config(app_factory(), log_level=log_level)
    uvicorn.Server(config).run(sockets=[sock])


def run_workers(
    app_factory: Callable[[], Any], workers: int, host: str, port: int, log_level: str, env: dict[str, str]
) -> int:
    """Serve ``app_factory()`` from ``workers`` spawned processes until one exits or this process is
    told to stop (SIGTERM / SIGINT, passed on to every worker); 0 when told to stop or when the first
    worker to exit exited cleanly."""
    context = multiprocessing.get_context("spawn")  # no fork of a loaded onnxruntime session
    processes = [
        context.Process(target=_worker, args=(app_factory, host, port, log_level, env), name=f"worker-{i}")
        for i in range(workers)
    ]
    for process in processes:
        process.start()

    told: list[int] = []

    def stop(signum: int | None = None, frame: Any = None) -> None:
        if signum is not None:
            told.append(signum)
        for process in processes:
            if process.is_alive():
                process.terminate()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        finished = wait([p.sentinel for p in processes])
        first = next(p for p in processes if p.sentinel in finished)
        stop()
        for process in processes:
            process.join(15)
            if process.is_alive():
                process.kill()
        # Stopped on request: uvicorn re-raises the SIGTERM it got once it has shut down cleanly.
        return 0 if told or not first.exitcode else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
