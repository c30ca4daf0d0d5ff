"""A fake OpenAI-compatible upstream that speaks the real wire format and fails on request.

Tell it what to do next with :meth:`FakeOpenAI.then`: each queued :class:`Behaviour` answers one
request (429 with retry-after, 5xx, a timeout, a connection reset, malformed JSON, a stream cut in
the middle, an ``{"error": …}`` event in the middle of a stream); with nothing queued it answers
normally. With ``echo_key`` its error messages repeat the API key it was sent, as some servers do.
It records every request it received.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Behaviour:
    status: int = 200
    retry_after: str | None = None
    retry_after_ms: str | None = None
    delay: float = 0.0
    reset: bool = False
    malformed: bool = False
    cut_after: int | None = None
    """Streaming: close the connection after this many chunks, without [DONE]."""
    error_code: str | None = None
    error_after: int | None = None
    """Streaming: after this many chunks, an error event ends the stream (no [DONE])."""
    echo_key: bool = False
    """Error messages (responses and stream events) repeat the API key the request carried."""

    def message(self, text: str, key: str | None) -> str:
        return f"{text} (key: {key})" if self.echo_key else text


@dataclass
class FakeOpenAI:
    reply: str = "Hello from the fake upstream."
    name: str = "fake"
    queue: deque[Behaviour] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    cancelled: int = 0
    port: int = 0
    """Set by whoever starts it, for tests that build URLs."""

    def then(self, *behaviours: Behaviour) -> FakeOpenAI:
        self.queue.extend(behaviours)
        return self

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        behaviour = self.queue.popleft() if self.queue else Behaviour()
        self.in_flight += 1
        try:
            if await self._client_left(request, behaviour.delay):
                self.cancelled += 1
                return Response(status_code=499)
        finally:
            self.in_flight -= 1
        if behaviour.reset:  # headers, then the connection drops before any body
            return StreamingResponse(self._broken(), media_type="application/json")
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        if behaviour.status >= 400:
            return self._error(behaviour, key)
        if behaviour.malformed:
            return Response("{not json", media_type="application/json")
        if body.get("stream"):
            return StreamingResponse(self._stream(body, behaviour, key), media_type="text/event-stream")
        return JSONResponse(self._completion(body))

    @staticmethod
    async def _broken() -> Any:
        yield b'{"id": "chatcmpl-fake", '
        raise ConnectionResetError("fake connection reset")

    @staticmethod
    async def _client_left(request: Request, delay: float) -> bool:
        """Wait ``delay`` seconds; True if the caller hung up meanwhile."""
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                return True
            await asyncio.sleep(0.02)
        return False

    def _error(self, b: Behaviour, key: str) -> Response:
        headers = {}
        if b.retry_after is not None:
            headers["retry-after"] = b.retry_after
        if b.retry_after_ms is not None:
            headers["retry-after-ms"] = b.retry_after_ms
        kind = {429: "requests", 401: "invalid_request_error", 400: "invalid_request_error"}.get(
            b.status, "server_error"
        )
        body = {"error": {"message": b.message(f"fake {b.status}", key), "type": kind, "param": None,
                          "code": b.error_code}}  # fmt: skip
        return JSONResponse(body, status_code=b.status, headers=headers)

    def _text(self, body: dict[str, Any]) -> str:
        return self.reply

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        text = self._text(body)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = "stop"
        if body.get("tools") and body.get("tool_choice") != "none":
            name = body["tools"][0]["function"]["name"]
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_fake1", "type": "function", "function": {"name": name, "arguments": '{"x": 1}'}}
                ],
            }
            finish = "tool_calls"
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
            "system_fingerprint": "fp_fake", "x_provider_extra": True,
        }  # fmt: skip

    async def _stream(self, body: dict[str, Any], b: Behaviour, key: str) -> Any:
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body["model"]}  # fmt: skip
        words = self._text(body).split(" ")
        pieces = [{"role": "assistant", "content": ""}] + [
            {"content": (" " if i else "") + w} for i, w in enumerate(words)
        ]
        for i, delta in enumerate(pieces):
            if b.cut_after is not None and i >= b.cut_after:
                raise ConnectionResetError("fake stream cut")
            if b.error_after is not None and i >= b.error_after:
                error = {"message": b.message("fake failure mid-stream", key), "type": "server_error",
                         "param": None, "code": b.error_code}  # fmt: skip
                yield f"data: {json.dumps({'error': error})}\n\n"
                return
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n"
            await asyncio.sleep(0)
        yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n"
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
