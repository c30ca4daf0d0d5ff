"""The HTTP routes of Chat Completions, models and health: parse → identify → gateway → render."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatgate.errors import ChatgateError, ModelNotFoundError
from chatgate.exchange import Exchange
from chatgate.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ModelList
from chatgate.protocol.validation import parse_chat_request
from chatgate.server.auth import identify
from chatgate.server.deps import gateway_of, limits_of, runtime_of, stopping_of
from chatgate.server.limits import parse_body
from chatgate.server.metrics import metrics
from chatgate.server.middleware import exchange_of
from chatgate.server.sse import ClientDisconnected, EventStreamResponse, chunk_events, unless_disconnected
from chatgate.streams import aclose

CACHE_HEADER = "x-chatgate-cache"
DISCONNECTED = 499


def _json(model: Any, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


def cache_asked(value: str | None) -> bool | None:
    """The ``x-chatgate-cache`` request header: on (1, true, on, yes), off (anything else), unset (None)."""
    asked = (value or "").strip().lower()
    return asked in ("1", "true", "on", "yes") if asked else None


def cache_headers(ex: Exchange) -> dict[str, str]:
    """``x-chatgate-cache: hit|miss`` where the response cache applied to the request."""
    return {CACHE_HEADER: ex.cache} if ex.cache != "off" else {}


async def chat_completions(request: Request) -> Response:
    ex = exchange_of(request)
    ex.endpoint = "chat.completions"
    caller = await identify(request)
    body = await request.body()
    ex.body_bytes = len(body)
    req = await parse_body(functools.partial(parse_chat_request, limits=limits_of(request)), body)
    ex.model_asked, ex.stream = req.model, bool(req.stream)
    if not caller.allows(req.model):
        raise ModelNotFoundError(req.model)
    ex.cache_asked = cache_asked(request.headers.get(CACHE_HEADER))
    if req.stream:
        return await _stream(request, req, ex)
    try:
        completion: ChatCompletion = await unless_disconnected(
            request.receive, gateway_of(request).complete(req, ex), stopping_of(request)
        )
    except ClientDisconnected:
        ex.disconnected = True
        return Response(status_code=DISCONNECTED)
    return Response(completion.model_dump_json(), media_type="application/json", headers=cache_headers(ex))


async def pull_first(
    request: Request, chunks: AsyncIterator[ChatCompletionChunk], ex: Exchange
) -> ChatCompletionChunk | None:
    """A stream's first chunk, pulled before answering so that errors found up front get a real status;
    None when the client went away meanwhile (the exchange says so, the stream is closed)."""
    try:
        return await unless_disconnected(request.receive, anext(chunks), stopping_of(request))
    except ClientDisconnected:
        ex.disconnected = True
        await aclose(chunks)
        return None
    except BaseException:
        await aclose(chunks)
        raise


async def _stream(request: Request, req: ChatCompletionRequest, ex: Exchange) -> Response:
    chunks = gateway_of(request).stream(req, ex)
    first = await pull_first(request, chunks, ex)
    if first is None:
        return Response(status_code=DISCONNECTED)
    events = chunk_events(first, chunks, ex.request_id)
    return EventStreamResponse(events, ex, headers=cache_headers(ex))  # type: ignore[return-value]


async def list_models(request: Request) -> Response:
    caller = await identify(request)
    return _json(ModelList(data=[m for m in gateway_of(request).models() if caller.allows(m.id)]))


async def get_model(request: Request) -> Response:
    caller = await identify(request)
    name = request.path_params["model_id"]
    if not caller.allows(name):
        raise ModelNotFoundError(name)
    return _json(gateway_of(request).model(name))


async def health(request: Request) -> Response:
    runtime = runtime_of(request)
    engines = {
        backend.model_id: {**backend.engine.stats.summary(), "waiting": backend.engine.waiting}
        for backend in runtime.local
    }
    return JSONResponse({"status": "ok", "models": [m.id for m in runtime.gateway.models()], "engines": engines})


def routes() -> list[Route]:
    out = [Route("/health", health, methods=["GET"]), Route("/metrics", metrics, methods=["GET"])]
    for prefix in ("/v1", "/api/v1"):
        out += [
            Route(f"{prefix}/chat/completions", chat_completions, methods=["POST"]),
            Route(f"{prefix}/models", list_models, methods=["GET"]),
            Route(f"{prefix}/models/{{model_id:path}}", get_model, methods=["GET"]),
        ]
    return out


__all__ = ["ChatgateError", "routes"]
