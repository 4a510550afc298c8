"""A minimal ASGI app for the worker-process tests: it answers with its process id."""

from __future__ import annotations

import os

from fastapi import FastAPI


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/pid")
    def pid() -> dict[str, int]:
        return {"pid": os.getpid()}

    return app


def make_broken_app() -> FastAPI:
    raise RuntimeError("this worker cannot start")
