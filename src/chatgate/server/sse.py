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

from chatgate.errors import ChatgateError, InternalError, ShuttingDownError
from chatgate.exchange import Exchange
from chatgate.protocol import ChatCompletionChunk
from chatgate.streams import aclose

log = logging.getLogger("chatgate.server")

T = TypeVar("T")
DONE = b"data: [DONE]\n\n"
SHUTTING_DOWN = "The server is shutting down and could not finish this request in time; please retry."


class ClientDisconnected(Exception):
    """The client closed the connection before the answer was ready."""


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client disconnects (the request body must already have been read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(receive: Receive, work: Awaitable[T], stopping: asyncio.Event | None = None) -> T:
    """Await ``work``, cancelling it if the client disconnects first (:class:`ClientDisconnected`) or
    the server's shutdown deadline passes (``stopping`` set: :class:`ShuttingDownError`)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(receive))
    stopper = asyncio.ensure_future((stopping or asyncio.Event()).wait())
    try:
        await asyncio.wait({task, watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task.cancelled():
        if stopping is not None and stopping.is_set():
            raise ShuttingDownError(SHUTTING_DOWN)
        raise ClientDisconnected
    return task.result()


def encode_event(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def chunk_events(
    first: ChatCompletionChunk, rest: AsyncIterator[ChatCompletionChunk], request_id: str
) -> AsyncIterator[bytes]:
    """SSE bytes: the chunks, an ``error`` event if the stream fails midway, then ``[DONE]``. ``rest`` is
    closed however this ends (its own ``finally`` settles what the exchange cost)."""
    try:
        yield encode_event(first.model_dump_json())
        async for chunk in rest:
            yield encode_event(chunk.model_dump_json())
    except ChatgateError as exc:
        yield encode_event(exc.body())
    except Exception:
        log.exception("stream failed", extra={"fields": {"request_id": request_id}})
        yield encode_event(InternalError("The server had an error while streaming your response.").body())
    finally:
        await aclose(rest)
    yield DONE


class EventStreamResponse:
    """A ``text/event-stream`` response fed by an async iterator of encoded events."""

    def __init__(self, events: AsyncIterator[bytes], exchange: Exchange, headers: dict[str, str] | None = None):
        self.events = events
        self.exchange = exchange
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
        stopping: asyncio.Event = getattr(scope["app"].state, "stopping", None) or asyncio.Event()
        stopper = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({pump, watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            stopper.cancel()
            cut = not pump.done()
            if cut:
                pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await pump
        if cut and stopping.is_set():  # the shutdown deadline: the stream ends as a failed stream does
            await send({"type": "http.response.body", "body": encode_event(ShuttingDownError(SHUTTING_DOWN).body()),
                        "more_body": True})  # fmt: skip
            await send({"type": "http.response.body", "body": DONE, "more_body": False})
        elif cut:
            self.exchange.disconnected = True

    async def _pump(self, send: Send) -> None:
        try:
            async for data in self.events:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await aclose(self.events)
