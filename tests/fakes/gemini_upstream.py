"""A fake Gemini API (``generateContent``, ``streamGenerateContent?alt=sse``) that speaks the real
wire format and fails on request.

Queue :class:`GeminiBehaviour` (or plain :class:`Behaviour`) with :meth:`FakeGemini.then`: each
answers one request (an error status with Gemini's ``{"error": {code, message, status, details}}``
body, a retry-after header or ``RetryInfo``, a connection reset, malformed JSON, a stream cut in the
middle, a safety block); with nothing queued it answers normally: text, or a ``functionCall`` of the
first declared (or allowed) function when tools are given and the mode isn't ``NONE``. Like the real
API it refuses a malformed body (no contents, a turn with no parts, an unknown role) with a 400. It
records every request's body, query, headers and path. With ``echo_key`` its error messages (and
an error event ending a stream) repeat the request's ``x-goog-api-key``.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.openai_upstream import Behaviour

GRPC_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
               429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip
PART_KINDS = ("text", "inline_data", "file_data", "functionCall", "functionResponse")


@dataclass
class GeminiBehaviour(Behaviour):
    """Gemini's own ways to answer: ``error_code`` (from :class:`Behaviour`) overrides the gRPC status."""

    block: Literal["prompt", "response"] | None = None
    """``prompt``: promptFeedback.blockReason and no candidates; ``response``: finishReason SAFETY."""
    retry_delay: str | None = None
    """A ``google.rpc.RetryInfo`` detail, e.g. ``"7s"``."""
    reason: str | None = None
    """A ``google.rpc.ErrorInfo`` detail, e.g. ``API_KEY_INVALID``."""
    cut_style: Literal["reset", "clean", "error"] = "reset"
    """How a stream stops at ``cut_after``: connection reset, a clean end, or an error event."""


@dataclass
class FakeGemini:
    reply: str = "Hello from the fake Gemini."
    api_key: str | None = None
    thoughts: int = 0
    queue: deque[Behaviour] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def then(self, *behaviours: Behaviour) -> FakeGemini:
        self.queue.extend(behaviours)
        return self

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1beta/models/{target}", self._generate, methods=["POST"])])

    async def _generate(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.queries.append(dict(request.query_params))
        self.headers.append(dict(request.headers))
        self.paths.append(request.url.path)
        b = self.queue.popleft() if self.queue else Behaviour()
        gb = b if isinstance(b, GeminiBehaviour) else GeminiBehaviour()
        key = request.headers.get("x-goog-api-key", "")
        await asyncio.sleep(b.delay)
        if b.reset:  # headers, then the connection drops (raising here would make Starlette answer 500)
            return StreamingResponse(reset_body(), media_type="application/json")
        if self.api_key is not None and request.headers.get("x-goog-api-key") != self.api_key:
            return self._error(GeminiBehaviour(status=400, reason="API_KEY_INVALID"))
        if b.status >= 400:
            return self._error(b, b.message(f"fake {b.status}", key) if b.echo_key else None)
        problem = invalid(body)
        if problem:
            return self._error(GeminiBehaviour(status=400), problem)
        _, _, method = request.path_params["target"].partition(":")
        if method == "streamGenerateContent":
            return StreamingResponse(self._stream(body, b, gb, key), media_type="text/event-stream")
        if b.malformed:
            return Response("{not json", media_type="application/json")
        return JSONResponse(self._answer(body, gb.block))

    def _error(self, b: Behaviour, message: str | None = None) -> Response:
        headers: dict[str, str] = {}
        if b.retry_after is not None:
            headers["retry-after"] = b.retry_after
        return JSONResponse(error_body(b, message), status_code=b.status, headers=headers)

    def _candidates(self, body: dict[str, Any], block: str | None) -> list[dict[str, Any]]:
        config = body.get("generationConfig", {})
        call = function_call(body)
        candidates = []
        for i in range(config.get("candidateCount", 1)):
            if block == "response":
                candidates.append({"finishReason": "SAFETY", "index": i, "safetyRatings": []})
                continue
            if call is not None:
                parts: list[dict[str, Any]] = [{"functionCall": call}]
                finish = "STOP"
            else:
                words = (self.reply if i == 0 else f"{self.reply} (take {i + 1})").split(" ")
                limit = config.get("maxOutputTokens", len(words))
                finish = "STOP" if limit >= len(words) else "MAX_TOKENS"
                parts = [{"text": " ".join(words[:limit])}]
            candidates.append({"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": i})
        return candidates

    def _usage(self, candidates: int) -> dict[str, Any]:
        usage = {"promptTokenCount": 11, "candidatesTokenCount": 7 * candidates, "cachedContentTokenCount": 4,
                 "totalTokenCount": 11 + 7 * candidates + self.thoughts}  # fmt: skip
        if self.thoughts:
            usage["thoughtsTokenCount"] = self.thoughts
        return usage

    def _answer(self, body: dict[str, Any], block: str | None) -> dict[str, Any]:
        if block == "prompt":
            return {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                    "usageMetadata": {"promptTokenCount": 11, "totalTokenCount": 11}}  # fmt: skip
        candidates = self._candidates(body, block)
        return {"candidates": candidates, "usageMetadata": self._usage(len(candidates)),
                "modelVersion": "gemini-fake-001", "responseId": "fake-response-id"}  # fmt: skip

    async def _stream(self, body: dict[str, Any], b: Behaviour, gb: GeminiBehaviour, key: str) -> Any:
        for i, event in enumerate(self._events(self._answer(body, gb.block))):
            if b.cut_after is not None and i >= b.cut_after:
                if gb.cut_style == "reset":
                    raise ConnectionResetError("fake stream cut")
                if gb.cut_style == "error":
                    message = b.message("fake 503 UNAVAILABLE", key)
                    yield f"data: {json.dumps(error_body(GeminiBehaviour(status=503), message))}\r\n\r\n"
                return
            yield "data: {not json\r\n\r\n" if b.malformed else f"data: {json.dumps(event)}\r\n\r\n"
            await asyncio.sleep(0)

    def _events(self, answer: dict[str, Any]) -> list[dict[str, Any]]:
        """The answer as Gemini streams it: text word by word, calls whole, finish and usage last."""
        if "candidates" not in answer:
            return [answer]
        meta = {"modelVersion": answer["modelVersion"], "responseId": answer["responseId"]}
        partial = {"promptTokenCount": 11}
        events: list[dict[str, Any]] = []
        for candidate in answer["candidates"]:
            parts = candidate.get("content", {}).get("parts", [])
            pieces = [[part] for part in parts if "text" not in part]
            for part in (p for p in parts if "text" in p):
                pieces += [[{"text": (" " if j else "") + w}] for j, w in enumerate(part["text"].split(" "))]
            for piece in pieces:
                content = {"role": "model", "parts": piece}
                events.append({"candidates": [{"content": content, "index": candidate["index"]}],
                               "usageMetadata": partial, **meta})  # fmt: skip
        last = [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": c["finishReason"],
                 "index": c["index"]} for c in answer["candidates"]]  # fmt: skip
        events.append({"candidates": last, "usageMetadata": answer["usageMetadata"], **meta})
        return events


async def reset_body() -> Any:
    raise ConnectionResetError("fake reset")  # uvicorn closes the connection mid-response
    yield b""  # an async generator


def error_body(b: Behaviour, message: str | None = None) -> dict[str, Any]:
    status = b.error_code or GRPC_STATUS.get(b.status, "UNKNOWN")
    details: list[dict[str, Any]] = []
    if isinstance(b, GeminiBehaviour) and b.reason:
        details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": b.reason,
                        "domain": "googleapis.com"})  # fmt: skip
    if isinstance(b, GeminiBehaviour) and b.retry_delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": b.retry_delay})
    error: dict[str, Any] = {"code": b.status, "message": message or f"fake {b.status} {status}", "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def function_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The call the fake makes: the first allowed (or declared) function, unless the mode is NONE."""
    declarations = [d for tool in body.get("tools", []) for d in tool.get("functionDeclarations", [])]
    config = body.get("toolConfig", {}).get("functionCallingConfig", {})
    if not declarations or config.get("mode") == "NONE":
        return None
    allowed = config.get("allowedFunctionNames") or [d["name"] for d in declarations]
    return {"name": allowed[0], "args": {"x": 1}}


def invalid(body: dict[str, Any]) -> str | None:
    """What the real API would refuse with INVALID_ARGUMENT, or None."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for i, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            return f"Please use a valid role: user, model. (contents[{i}])"
        parts = content.get("parts")
        if not parts:
            return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
        for part in parts:
            if sum(kind in part for kind in PART_KINDS) != 1:
                return f"* GenerateContentRequest.contents[{i}].parts: exactly one data field per part."
            if "functionCall" in part and content["role"] != "model":
                return "functionCall parts belong to model turns"
            if "functionResponse" in part and content["role"] != "user":
                return "functionResponse parts belong to user turns"
    return None
