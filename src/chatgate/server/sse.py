"""Server-sent events for streamed completions, and disconnect detection.

:class:`EventStreamResponse` watches the connection while it streams: when the client goes away,
the producing task is cancelled at once (not at the next write), which cancels the generation
behind it and frees the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from starlette.types import Receive, Scope, Send

from chatgate.errors import ChatgateError, InternalError
from chatgate.protocol import ChatCompletionChunk

log = logging.getLogger("chatgate.server")

T = TypeVar("T")
DONE = b"data: [DONE]\n\n"


class ClientDisconnected(Exception):
    """The client closed the connection before the answer was ready."""


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client disconnects (the request body must already have been read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task.cancelled():
        raise ClientDisconnected
    return task.result()


def encode_event(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def chunk_events(
    first: ChatCompletionChunk, rest: AsyncIterator[ChatCompletionChunk], request_id: str
) -> AsyncIterator[bytes]:
    """SSE bytes: the chunks, an ``error`` event if the stream fails midway, then ``[DONE]``."""
    try:
        yield encode_event(first.model_dump_json())
        async for chunk in rest:
            yield encode_event(chunk.model_dump_json())
    except ChatgateError as exc:
        yield encode_event(exc.body())
    except Exception:
        log.exception("stream failed", extra={"fields": {"request_id": request_id}})
        yield encode_event(InternalError("The server had an error while streaming your response.").body())
    yield DONE


class EventStreamResponse:
    """A ``text/event-stream`` response fed by an async iterator of encoded events."""

    def __init__(self, events: AsyncIterator[bytes], state: dict[str, Any], headers: dict[str, str] | None = None):
        self.events = events
        self.state = state
        self.extra_headers = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                    *self.extra_headers,
                ],
            }
        )
        pump = asyncio.ensure_future(self._pump(send))
        watcher = asyncio.ensure_future(wait_for_disconnect(receive))
        try:
            await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not pump.done():
                self.state["disconnected"] = True
                pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await pump

    async def _pump(self, send: Send) -> None:
        try:
            async for data in self.events:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
