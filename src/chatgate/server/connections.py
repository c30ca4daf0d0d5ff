"""Connection limits, under uvicorn: what its own settings cover (keep-alive timeout, concurrency,
backlog, graceful-shutdown deadline) and what they do not, added to its HTTP protocol here:

* a deadline for a request's line and headers, counted from the connection (or from the first byte
  of the next request on a keep-alive connection): a slowloris client gets a 408 and is closed;
* a deadline for the body, counted from the end of the headers;
* a bound on the headers' size and number (431 and a close);
* a cap on open connections: one over it is closed at once, before it costs more than an accept.

uvicorn's own ``limit_concurrency`` answers 503 only once a request's headers are in, so it cannot
stop idle connections from using up the file descriptors; the cap and the header deadline do.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from chatgate.config import LimitsConfig
from chatgate.errors import ChatgateError, HeadersTooLargeError, RequestTimeoutError


def _raw_response(error: ChatgateError, reason: str) -> bytes:
    """``error`` as a whole HTTP/1.1 response written straight to the socket (no app involved)."""
    body = json.dumps(error.body()).encode()
    head = f"HTTP/1.1 {error.status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
    return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body


_TIMEOUT = _raw_response(
    RequestTimeoutError(
        "The request was not received in time: its headers and body must arrive within the server's time "
        "limits (limits.header_timeout_seconds, limits.body_timeout_seconds)."
    ),
    "Request Timeout",
)
_HEADERS_TOO_LARGE = _raw_response(
    HeadersTooLargeError("Request headers too large (limits.max_header_bytes, limits.max_headers)."),
    "Request Header Fields Too Large",
)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines, header bounds and connection cap above."""

    limits: ClassVar[LimitsConfig]
    """Set by :func:`guarded_protocol`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._header_count = 0
        self._shut = False
        """Closed by a limit: the rest of what the client sent is ignored."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            transport.abort()  # over the cap: closed at once, the others keep being served
            return
        self._arm(self.limits.header_timeout_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._shut:
            super().data_received(data)

    def on_message_begin(self) -> None:
        if self._shut:
            return
        super().on_message_begin()
        self._header_bytes = self._header_count = 0
        if self._deadline is None:
            self._arm(self.limits.header_timeout_seconds)

    def on_url(self, url: bytes) -> None:
        self._count(len(url), 0)
        if not self._shut:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value), 1)
        if not self._shut:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._shut:
            return
        self._arm(self.limits.body_timeout_seconds)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._shut:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._shut:
            return
        self._disarm()
        super().on_message_complete()

    def _count(self, size: int, lines: int) -> None:
        self._header_bytes += size
        self._header_count += lines
        if self._header_bytes > self.limits.max_header_bytes or self._header_count > self.limits.max_headers:
            self._close_with(_HEADERS_TOO_LARGE)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        """Headers or body too slow: a 408 unless an answer has begun, then the connection closes."""
        self._deadline = None
        answered = self.cycle is not None and self.cycle.response_started
        self._close_with(b"" if answered else _TIMEOUT)

    def _close_with(self, response: bytes) -> None:
        self._shut = True
        self._disarm()
        if self.transport.is_closing():
            return
        if response:
            self.transport.write(response)
        if self.cycle is not None:
            self.cycle.disconnected = True  # the app sees http.disconnect; its answer goes nowhere
            self.cycle.message_event.set()
        self.transport.close()


def guarded_protocol(limits: LimitsConfig) -> type[GuardedProtocol]:
    """The protocol class uvicorn builds for each connection, bound to ``limits``."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})


END_GRACE_SECONDS = 2.0
"""After the shutdown deadline: time for requests to end themselves before uvicorn cancels them."""


def uvicorn_options(limits: LimitsConfig) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments that carry ``limits`` (``chatgate serve`` and the tests use them)."""
    return {
        "http": guarded_protocol(limits),
        "timeout_keep_alive": limits.keep_alive_seconds,
        "limit_concurrency": limits.max_concurrency,
        "backlog": limits.backlog,
        "timeout_graceful_shutdown": limits.shutdown_timeout_seconds + END_GRACE_SECONDS,
    }


class GracefulServer(uvicorn.Server):
    """uvicorn's server, whose shutdown (SIGTERM, SIGINT) stops accepting, lets requests in flight go
    on until ``deadline`` seconds have passed, then sets ``stopping``: streams end with an error event
    and ``[DONE]``, requests still waiting get a 503, their generations are cancelled (engine slots
    freed). Whatever is left after ``END_GRACE_SECONDS`` more is cancelled by uvicorn; then the app's
    shutdown writes the ledger's last rows and the process exits."""

    def __init__(self, config: uvicorn.Config, stopping: asyncio.Event, deadline: float) -> None:
        super().__init__(config)
        self.stopping = stopping
        self.deadline = deadline

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        timer = asyncio.get_running_loop().call_later(self.deadline, self.stopping.set)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()
