"""ASGI middleware bounding a request's body: a ``Content-Length`` over the limit is refused at once,
before a byte of the body is read; a chunked body (or one longer than it said) is counted as it
arrives and refused as soon as it passes the limit. Either way: OpenAI's error shape, status 413,
and the connection closed (the rest of the body is never read)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatgate.errors import RequestTooLargeError
from chatgate.protocol.limits import sized
from chatgate.protocol.validation import parse_model

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


async def parse_body(parse: Callable[[bytes], T], body: bytes) -> T:
    """``parse(body)``, off the event loop when the body is large."""
    return await sized(functools.partial(parse, body), len(body))


async def read_model(request: Request, cls: type[M]) -> M:
    """The request's JSON body as ``cls`` (chatgate's own APIs), within the app's limits."""
    parse = functools.partial(parse_model, cls, limits=request.app.state.limits)
    return await parse_body(parse, await request.body())


def too_large(max_bytes: int, got: int | None = None) -> RequestTooLargeError:
    size = f" ({got} bytes)" if got is not None else ""
    return RequestTooLargeError(
        f"Request body too large{size}: this server accepts bodies of at most {max_bytes} bytes "
        "(limits.max_body_bytes)."
    )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _refuse(send, too_large(self.max_bytes, declared))
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large(self.max_bytes)  # rendered by the app's handler, where the body is read
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() else None
    return None


async def _refuse(send: Send, error: RequestTooLargeError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in error.headers().items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
