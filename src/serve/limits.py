"""The request body limit: a body over ``max_body_bytes`` is answered 413 before anything parses it.

Pure ASGI middleware. A declared ``Content-Length`` over the limit is refused without reading a
byte; otherwise the body is read (as the app would read it anyway) while its actual size is
counted, whatever the header said or whether the body came chunked, and refused the moment it
passes the limit. The 413 closes the connection, so that the rest of an oversized upload is not
read as the next request.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 8 * 1024 * 1024  # a /recommend/batch of 1024 sessions of ~500 raw ids fits


class BodyLimitMiddleware:
    """Refuses request bodies larger than ``max_body_bytes`` with 413 and a JSON ``detail``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self.app, self.limit = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.limit:
            await self.refuse(send, f"declares {int(declared)} bytes")
            return
        first, size = [], 0
        while True:
            message = await receive()
            first.append(message)
            if message["type"] != "http.request":
                break  # the client went away: the app hears it
            size += len(message.get("body", b""))
            if size > self.limit:
                await self.refuse(send, f"has more than {self.limit} bytes")
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(first, receive), send)

    async def refuse(self, send: Send, what: str) -> None:
        detail = f"request body {what}; this service takes at most {self.limit} bytes (max_body_bytes)"
        body = json.dumps({"detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives the whole body read so far as one message, then the real one's."""
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
    queued = [{"type": "http.request", "body": body, "more_body": False}]
    queued += [m for m in messages if m["type"] != "http.request"]

    async def replay() -> Message:
        return queued.pop(0) if queued else await receive()

    return replay
