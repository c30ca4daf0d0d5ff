"""A fake Anthropic Messages API (``POST /v1/messages``) that speaks the real wire format and fails on request.

Like :class:`tests.fakes.openai_upstream.FakeOpenAI`: queue :class:`Behaviour` s with :meth:`then`,
each answering one request; with nothing queued it answers normally. It answers with text, or,
when it is given tools and ``tool_choice`` is not ``none``, with ``tool_use`` blocks: the named
tool when one is forced, else one call per tool (only the first when parallel use is disabled),
after :attr:`preamble` text if set. Streams use Anthropic's named SSE events. It records every
request body and its headers.

Failure modes: an error status with Anthropic's error body and type (and ``retry-after``);
``reset`` closes the connection without an answer; ``malformed`` sends broken JSON (as a body, or
as a stream event); ``cut_after`` drops the connection after that many stream events;
``error_code`` on a 200 stream sends an ``error`` event of that type after ``message_start`` (after
``error_after`` events, if set); ``echo_key`` repeats the request's ``x-api-key`` in error messages.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.fakes.openai_upstream import Behaviour

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class _Reset(Response):
    """No answer at all: marks the request, and :meth:`FakeAnthropic.app` has uvicorn drop the connection."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["fake.reset"] = True


@dataclass
class FakeAnthropic:
    reply: str = "Hello from the fake Anthropic upstream."
    tool_input: dict[str, Any] = field(default_factory=lambda: {"city": "Paris", "days": 3})
    preamble: str | None = None
    stop_reason: str | None = None
    """Overrides end_turn/tool_use."""
    cache_read: int = 0
    cache_creation: int = 0
    truncate: bool = False
    """Streams end cleanly, but without ``message_stop``."""
    queue: deque[Behaviour] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def then(self, *behaviours: Behaviour) -> FakeAnthropic:
        self.queue.extend(behaviours)
        return self

    def reset(self) -> None:
        """Back to the defaults, for a fake shared by several tests."""
        fresh = FakeAnthropic()
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))

    def app(self) -> Any:
        starlette = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

        async def app(scope: Scope, receive: Receive, send: Send) -> Any:
            await starlette(scope, receive, send)
            # uvicorn closes, without a byte, the connection of an app that returns a value
            return "reset" if scope.get("fake.reset") else None

        return app

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        b = self.queue.popleft() if self.queue else Behaviour()
        await asyncio.sleep(b.delay)
        if b.reset:
            return _Reset()
        key = request.headers.get("x-api-key", "")
        if b.status >= 400:
            return _error(b, key)
        if "max_tokens" not in body or "x-api-key" not in request.headers:
            return _error(Behaviour(status=400 if "max_tokens" not in body else 401), key)
        if b.malformed and not body.get("stream"):
            return Response('{"id": "msg_fake", "content": [', media_type="application/json")
        if body.get("stream"):
            return StreamingResponse(self._stream(body, b, key), media_type="text/event-stream")
        return JSONResponse(self._message(body))

    def _blocks(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {"type": "auto"}
        if not tools or choice["type"] == "none":
            return [{"type": "text", "text": self.reply}]
        names = [t["name"] for t in tools]
        if choice["type"] == "tool":
            names = [choice["name"]]
        elif choice.get("disable_parallel_tool_use"):
            names = names[:1]
        blocks: list[dict[str, Any]] = [{"type": "text", "text": self.preamble}] if self.preamble else []
        for i, name in enumerate(names):
            blocks.append({"type": "tool_use", "id": f"toolu_fake{i}", "name": name, "input": self.tool_input})
        return blocks

    def _usage(self, output: int) -> dict[str, Any]:
        return {"input_tokens": 11, "cache_creation_input_tokens": self.cache_creation,
                "cache_read_input_tokens": self.cache_read, "output_tokens": output}  # fmt: skip

    def _message(self, body: dict[str, Any]) -> dict[str, Any]:
        blocks = self._blocks(body)
        called = any(b["type"] == "tool_use" for b in blocks)
        return {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"], "content": blocks,
            "stop_reason": self.stop_reason or ("tool_use" if called else "end_turn"), "stop_sequence": None,
            "usage": self._usage(7),
        }  # fmt: skip

    def _events(self, body: dict[str, Any], b: Behaviour, key: str) -> list[dict[str, Any]]:
        events = self._answer_events(body)
        if b.error_code is not None:
            error = {"type": "error", "error": {"type": b.error_code, "message": b.message("fake stream error", key)}}
            return [*events[: b.error_after or 1], error]
        return events

    def _answer_events(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        message = self._message(body)
        start = {**message, "content": [], "stop_reason": None, "usage": self._usage(1)}
        events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
        for i, block in enumerate(message["content"]):
            empty = {**block, "text": ""} if block["type"] == "text" else {**block, "input": {}}
            events.append({"type": "content_block_start", "index": i, "content_block": empty})
            if i == 0:
                events.append({"type": "ping"})
            for piece in _pieces(block):
                events.append({"type": "content_block_delta", "index": i, "delta": piece})
            events.append({"type": "content_block_stop", "index": i})
        delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        events.append({"type": "message_delta", "delta": delta, "usage": {"output_tokens": 7}})
        if not self.truncate:
            events.append({"type": "message_stop"})
        return events

    async def _stream(self, body: dict[str, Any], b: Behaviour, key: str) -> AsyncIterator[str]:
        for i, event in enumerate(self._events(body, b, key)):
            if b.cut_after is not None and i >= b.cut_after:
                raise ConnectionResetError("fake stream cut")
            data = "{broken" if b.malformed and i == 1 else json.dumps(event)
            yield f"event: {event['type']}\ndata: {data}\n\n"
            await asyncio.sleep(0)


def _pieces(block: dict[str, Any]) -> list[dict[str, Any]]:
    """A block's content as the deltas Anthropic streams: words of text, fragments of JSON."""
    if block["type"] == "text":
        words = block["text"].split(" ")
        return [{"type": "text_delta", "text": (" " if i else "") + w} for i, w in enumerate(words)]
    raw = json.dumps(block["input"])
    fragments = [""] + [raw[i : i + 5] for i in range(0, len(raw), 5)]
    return [{"type": "input_json_delta", "partial_json": f} for f in fragments]


def _error(b: Behaviour, key: str) -> Response:
    headers = {"request-id": "req_fake"}
    if b.retry_after is not None:
        headers["retry-after"] = b.retry_after
    if b.retry_after_ms is not None:
        headers["retry-after-ms"] = b.retry_after_ms
    kind = b.error_code or ERROR_TYPES.get(b.status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": b.message(f"fake {b.status} {kind}", key)}}
    return JSONResponse(body, status_code=b.status, headers=headers)
