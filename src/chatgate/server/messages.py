"""Anthropic's Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``, any model.

A request is parsed into :mod:`chatgate.protocol.messages`, translated into a chat completion request
(``messages_translate``) and answered by the Gateway like any chat request, so keys, budgets, rate
limits, the cache, the ledger (``endpoint`` ``messages``) and ``/metrics`` hold. The key comes in
``x-api-key`` or ``Authorization: Bearer``; errors, before and during a stream, are in Anthropic's shape
and statuses (``{"type": "error", "error": {"type": "not_found_error", ...}}``; overloaded is 529).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar, runtime_checkable

from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatgate.config import LimitsConfig
from chatgate.errors import (
    ChatgateError,
    InternalError,
    InvalidRequestError,
    MissingKeyError,
    ModelNotFoundError,
)
from chatgate.exchange import Exchange
from chatgate.protocol import ChatCompletion, ChatCompletionRequest
from chatgate.protocol.decoding import decode_body
from chatgate.protocol.limits import check_chat
from chatgate.protocol.messages import CountTokensRequest, MessagesRequest, TokenCount
from chatgate.protocol.validation import check_semantics, parse_model
from chatgate.server.auth import identify
from chatgate.server.deps import gateway_of, limits_of, stopping_of
from chatgate.server.limits import parse_body
from chatgate.server.messages_stream import error_body, error_status, message_events
from chatgate.server.messages_translate import chat_request, message
from chatgate.server.middleware import exchange_of
from chatgate.server.routes import CACHE_HEADER, DISCONNECTED, cache_asked, cache_headers, pull_first
from chatgate.server.sse import ClientDisconnected, EventStreamResponse, unless_disconnected

log = logging.getLogger("chatgate.server")

R = TypeVar("R", bound=CountTokensRequest)
Endpoint = Callable[[Request], Awaitable[Response]]
MISSING_KEY = "x-api-key header is required"
VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")


@runtime_checkable
class CountsTokens(Protocol):
    """A backend that can count a request's prompt tokens exactly (the local model)."""

    def count_tokens(self, req: ChatCompletionRequest) -> int: ...


def anthropic_errors(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` with its errors rendered in Anthropic's shape and statuses."""

    @functools.wraps(endpoint)
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ChatgateError as exc:
            return render_error(request, exc)
        except ClientDisconnect:  # the app's own handler: nobody to answer
            raise
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": exchange_of(request).request_id}})
            return render_error(request, InternalError("The server had an error processing your request."))

    return wrapped


def render_error(request: Request, exc: ChatgateError) -> Response:
    ex = exchange_of(request)
    ex.error_type = exc.type
    if isinstance(exc, MissingKeyError):
        exc = MissingKeyError(MISSING_KEY)
    headers = {**exc.headers(), "request-id": ex.request_id}
    return JSONResponse(error_body(exc), status_code=error_status(exc), headers=headers)


def parse_messages(cls: type[R], body: bytes, limits: LimitsConfig) -> tuple[R, ChatCompletionRequest]:
    """A Messages (or count_tokens) body within ``limits``, and its translation into a chat request."""
    raw = decode_body(body, limits)
    if isinstance(raw, dict):
        check_chat(raw, limits)
    req = parse_model(cls, body, limits)
    try:
        chat = chat_request(req)
    except ValidationError as exc:  # what Anthropic's types allow and chat's do not (no turn left, say)
        where = ".".join(str(p) for p in exc.errors()[0]["loc"])
        raise InvalidRequestError(f"{where}: {exc.errors()[0]['msg']}", param=where or None) from None
    check_semantics(chat)
    return req, chat


async def _open(request: Request, ex: Exchange, cls: type[R]) -> tuple[R, ChatCompletionRequest]:
    """Identify the caller, read and translate the body; 404 for a model the caller may not use."""
    caller = await identify(request, x_api_key=True)
    version = request.headers.get("anthropic-version")
    if version is not None and not VERSION.fullmatch(version.strip()):
        raise InvalidRequestError(f"anthropic-version: invalid version '{version[:32]}'.", param="anthropic-version")
    body = await request.body()
    ex.body_bytes = len(body)
    req, chat = await parse_body(functools.partial(parse_messages, cls, limits=limits_of(request)), body)
    ex.model_asked = req.model
    if not caller.allows(req.model):
        raise ModelNotFoundError(req.model)
    return req, chat


@anthropic_errors
async def create_message(request: Request) -> Response:
    ex = exchange_of(request)
    ex.endpoint = "messages"
    req, chat = await _open(request, ex, MessagesRequest)
    ex.stream = bool(req.stream)
    ex.cache_asked = cache_asked(request.headers.get(CACHE_HEADER))
    headers = {"request-id": ex.request_id}
    if req.stream:
        return await _stream(request, chat, ex, headers)
    try:
        completion: ChatCompletion = await unless_disconnected(
            request.receive, gateway_of(request).complete(chat, ex), stopping_of(request)
        )
    except ClientDisconnected:
        ex.disconnected = True
        return Response(status_code=DISCONNECTED)
    return Response(message(completion).model_dump_json(), media_type="application/json",
                    headers={**headers, **cache_headers(ex)})  # fmt: skip


async def _stream(request: Request, chat: ChatCompletionRequest, ex: Exchange, headers: dict[str, str]) -> Response:
    chunks = gateway_of(request).stream(chat, ex)
    first = await pull_first(request, chunks, ex)
    if first is None:
        return Response(status_code=DISCONNECTED)
    events = message_events(first, chunks, ex.request_id)
    return EventStreamResponse(events, ex, headers={**headers, **cache_headers(ex)})  # type: ignore[return-value]


@anthropic_errors
async def count_tokens(request: Request) -> Response:
    """The prompt's tokens on the model's first deployment; only a model that tokenises here can count."""
    ex = exchange_of(request)
    ex.endpoint = "messages.count_tokens"
    req, chat = await _open(request, ex, CountTokensRequest)
    deployments = gateway_of(request).router.deployments(chat, ex)
    backend = deployments[0].backend if deployments else None
    if not isinstance(backend, CountsTokens):
        raise InvalidRequestError(f"Counting tokens is not available for the model '{req.model}' here.",
                                  param="model")  # fmt: skip
    tokens = await asyncio.to_thread(backend.count_tokens, chat)
    return Response(TokenCount(input_tokens=tokens).model_dump_json(), media_type="application/json",
                    headers={"request-id": ex.request_id})  # fmt: skip


def message_routes() -> list[Route]:
    out: list[Route] = []
    for prefix in ("/v1", "/api/v1"):
        out += [
            Route(f"{prefix}/messages", create_message, methods=["POST"]),
            Route(f"{prefix}/messages/count_tokens", count_tokens, methods=["POST"]),
        ]
    return out


__all__ = ["message_routes"]
