"""ASGI middleware: a request id on every response, one log line per request, and a last line of
defence that turns an unexpected exception into OpenAI's 500 without leaking internals."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatgate.errors import InternalError

log = logging.getLogger("chatgate.access")
LOGGED = (
    "key_id",
    "model",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "error_type",
    "disconnected",
)
"""Request facts a log line carries; a key's id, never the key."""


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.monotonic()
        status: list[int] = []
        logged: list[bool] = []
        finished: list[bool] = []

        async def on_finish() -> None:
            """The route's ``on_finish`` hook (costs, the ledger), once, before the response's end goes out."""
            hook = state.get("on_finish")
            if finished or hook is None:
                return
            finished.append(True)
            try:
                await hook(status[0] if status else 500, (time.monotonic() - started) * 1000)
            except Exception:
                log.exception("request accounting failed", extra={"fields": {"request_id": request_id}})

        def finish() -> None:
            if not logged:
                logged.append(True)
                _log_request(scope, state, status[0] if status else 0, started)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                extra = [(b"x-request-id", request_id.encode())]
                present = {k.lower() for k, _ in message.get("headers", [])}
                for name, value in state.get("ratelimit_headers", {}).items():
                    if name.encode() not in present:
                        extra.append((name.encode(), value.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            last = message["type"] == "http.response.body" and not message.get("more_body", False)
            if last:
                await on_finish()
            await send(message)
            if last:
                finish()

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": request_id}})
            if not status:
                status.append(500)
                await _send_internal_error(send, request_id)
        finally:
            await on_finish()
            finish()


async def _send_internal_error(send: Send, request_id: str) -> None:
    error = InternalError(
        f"The server had an error while processing your request. Please retry; if the error persists, "
        f"report it with the request ID {request_id}."
    )
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _log_request(scope: Scope, state: dict[str, Any], status: int, started: float) -> None:
    fields: dict[str, Any] = {
        "request_id": state.get("request_id"),
        "method": scope.get("method"),
        "path": scope.get("path"),
        "status": status,
        "latency_ms": round((time.monotonic() - started) * 1000, 1),
    }
    for key in LOGGED:
        if key in state:
            fields[key] = state[key]
    ctx = state.get("ctx")
    attempts = getattr(ctx, "attempts", 0)
    if attempts:
        fields["attempts"] = attempts
    log.info("request", extra={"fields": fields})
