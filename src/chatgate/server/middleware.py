"""ASGI middleware: every HTTP request gets its :class:`~chatgate.exchange.Exchange` and an id; when the
response has gone out, the exchange is finished (the gateway's ledger row and metrics, for metered API
calls) and written as one access-log line; an unexpected exception becomes OpenAI's 500 without leaking
internals."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatgate.errors import InternalError
from chatgate.exchange import Exchange

log = logging.getLogger("chatgate.access")
SCOPE_KEY = "chatgate.exchange"
"""Where an HTTP request's Exchange lives in its ASGI scope (the one typed record; no facts in the scope)."""

Finisher = Callable[[Exchange], None]


def exchange_of(connection: HTTPConnection) -> Exchange:
    """The Exchange of a request (made by :class:`ExchangeMiddleware`)."""
    exchange: Exchange = connection.scope[SCOPE_KEY]
    return exchange


class ExchangeMiddleware:
    """``finisher(scope)`` gives what finishes a metered exchange (the gateway's, once it is running)."""

    def __init__(self, app: ASGIApp, finisher: Callable[[Scope], Finisher | None]) -> None:
        self.app = app
        self.finisher = finisher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ex = Exchange(request_id="req_" + uuid.uuid4().hex)
        scope[SCOPE_KEY] = ex
        ended: list[bool] = []

        def end() -> None:
            """Once, before the response's last byte goes out (or when it never will)."""
            if ended:
                return
            ended.append(True)
            ex.finished_at = time.monotonic()
            ex.status = 499 if ex.disconnected else ex.status or 500
            finish = self.finisher(scope) if ex.endpoint else None
            try:
                if finish is not None:
                    finish(ex)
            except Exception:
                log.exception("request accounting failed", extra={"fields": {"request_id": ex.request_id}})
            _log_request(scope, ex)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                ex.status = message["status"]
                message["headers"] = [*message.get("headers", []), *_extra_headers(message, ex)]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                end()
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": ex.request_id}})
            if not ex.status:
                ex.status = 500
                await _send_internal_error(send, ex.request_id)
        finally:
            end()


def _extra_headers(message: Message, ex: Exchange) -> list[tuple[bytes, bytes]]:
    """``x-request-id``, the key's ``x-ratelimit-*`` and ``x-chatgate-attempts`` (where not already set)."""
    present = {k.lower() for k, _ in message.get("headers", [])}
    extra = [(b"x-request-id", ex.request_id.encode())]
    wanted = dict(ex.ratelimit_headers)
    if ex.attempts:
        wanted["x-chatgate-attempts"] = str(ex.attempts)
    extra += [(k.encode(), v.encode()) for k, v in wanted.items() if k.encode() not in present]
    return extra


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


def _log_request(scope: Scope, ex: Exchange) -> None:
    """One line per request, from its Exchange: a key's id, never the key."""
    if not log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "request_id": ex.request_id,
        "method": scope.get("method"),
        "path": scope.get("path"),
        "status": ex.status,
        "latency_ms": round(((ex.finished_at or time.monotonic()) - ex.received_at) * 1000, 1),
    }
    facts: dict[str, Any] = {"key_id": ex.key_id, "model": ex.model, "deployment": ex.deployment,
                             "error_type": ex.error_type}  # fmt: skip
    if ex.endpoint:
        facts["stream"] = ex.stream
    if ex.usage is not None:
        facts |= {"prompt_tokens": ex.usage.prompt_tokens, "completion_tokens": ex.usage.completion_tokens,
                  "cached_tokens": ex.usage.prompt_tokens_details.cached_tokens}  # fmt: skip
    facts |= {"cost": ex.cost or None, "cache": ex.cache if ex.cache != "off" else None,
              "attempts": ex.attempts or None, "disconnected": ex.disconnected or None}  # fmt: skip
    fields |= {k: v for k, v in facts.items() if v is not None}
    log.info("request", extra={"fields": fields})
