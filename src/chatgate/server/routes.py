"""The HTTP routes: chat completions, models, health."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatgate.exchange import Exchange
from chatgate.errors import ChatgateError, ModelNotFoundError, RateLimitError
from chatgate.gateway.keys import KeyRecord
from chatgate.gateway.limiter import Limiter
from chatgate.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ModelList,
    StreamOptions,
    Usage,
)
from chatgate.protocol.assemble import Assembler, as_chunks, fresh
from chatgate.protocol.validation import parse_chat_request
from chatgate.routing import Router
from chatgate.server.accounting import CACHE_HEADER, Accounting, owner
from chatgate.server.auth import Caller, identify
from chatgate.server.limits import parse_body
from chatgate.server.metrics import metrics
from chatgate.server.sse import ClientDisconnected, EventStreamResponse, chunk_events, unless_disconnected


def _router(request: Request) -> Router:
    router: Router = request.app.state.router
    return router


def _state(request: Request) -> dict[str, Any]:
    state: dict[str, Any] = request.scope["state"]
    return state


def _json(model: Any, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


async def _rate_limit(request: Request, key: KeyRecord, tokens: int) -> None:
    """Count the request against its key's limits; 429 with ``retry-after`` when over."""
    limiter: Limiter = request.app.state.limiter
    verdict = await limiter.check(key.id, key.rpm, key.tpm, tokens)
    headers = verdict.headers()
    _state(request)["ratelimit_headers"] = headers
    if verdict.refused is not None:
        limit = key.rpm if verdict.refused == "requests" else key.tpm
        raise RateLimitError(
            f"Rate limit reached for this API key on {verdict.refused} per minute: limit {limit}. "
            f"Please try again in {verdict.reset:.0f}s.",
            kind=verdict.refused,
            extra_headers={**headers, "retry-after": str(max(1, round(verdict.reset)))},
        )


def _accounting(request: Request) -> Accounting:
    accounting: Accounting = request.app.state.accounting
    return accounting


async def chat_completions(request: Request) -> Response:
    state = _state(request)
    accounting = _accounting(request)
    ctx = Exchange(request_id=state["request_id"])
    state["ctx"] = ctx

    async def on_finish(status: int, latency_ms: float) -> None:
        await accounting.finish(state, status, latency_ms)

    state["on_finish"] = on_finish
    caller = await identify(request)
    body = await request.body()
    state["body_bytes"] = len(body)
    req = await parse_body(functools.partial(parse_chat_request, limits=request.app.state.limits), body)
    state["model"] = req.model
    state["stream"] = bool(req.stream)
    if not caller.allows(req.model):
        raise ModelNotFoundError(req.model)
    ctx.grant = caller.key.grant() if caller.key is not None else None  # the router holds every fallback to it
    if caller.key is not None and (caller.key.rpm or caller.key.tpm):
        await _rate_limit(request, caller.key, len(body) // 4 + (req.completion_limit() or 0))
    router = _router(request)
    entry = accounting.cache_key(caller, req, request.headers)
    headers = {CACHE_HEADER: "miss"} if entry is not None else {}
    if entry is not None:
        hit = await accounting.cached(entry)
        if hit is not None:
            return await _from_cache(request, req, caller, ChatCompletion.model_validate_json(hit))
    req = await accounting.reserve(caller, req, router, ctx, body_bytes=len(body), state=state)
    if req.stream:
        return await _stream(request, router, req, ctx, caller, entry, headers)
    try:
        completion: ChatCompletion = await unless_disconnected(request.receive, router.complete(req, ctx),
                                                                 request.app.state.stopping)  # fmt: skip
    except ClientDisconnected:
        state["disconnected"] = True
        return Response(status_code=499)
    _record_usage(state, completion.model, completion.usage)
    await accounting.settle(state)
    await _keep(accounting, caller, req, completion, entry)
    return Response(completion.model_dump_json(), media_type="application/json",
                    headers={**attempt_headers(ctx), **headers})  # fmt: skip


async def _keep(
    accounting: Accounting, caller: Caller, req: ChatCompletionRequest, completion: ChatCompletion, entry: str | None
) -> None:
    """Put a finished answer in the cache and, with ``store: true``, among the stored completions."""
    if entry is not None:
        await accounting.remember(entry, completion.model_dump_json())
    if req.store:
        await accounting.stored.save(owner(caller), req, completion)


async def _from_cache(request: Request, req: ChatCompletionRequest, caller: Caller, hit: ChatCompletion) -> Response:
    """A cached answer: free, said so in ``x-chatgate-cache: hit``, streamed when the request streams."""
    state = _state(request)
    state["cache_hit"] = True
    completion = fresh(hit)
    _record_usage(state, completion.model, completion.usage)
    if req.store:
        await _accounting(request).stored.save(owner(caller), req, completion)
    headers = {CACHE_HEADER: "hit"}
    if not req.stream:
        return Response(completion.model_dump_json(), media_type="application/json", headers=headers)
    chunks = as_chunks(completion, include_usage=req.wants_usage_chunk())
    first = next(chunks)

    async def rest() -> AsyncIterator[ChatCompletionChunk]:
        for chunk in chunks:
            yield chunk

    events = chunk_events(first, rest(), state["request_id"])
    return EventStreamResponse(events, state, headers=headers)  # type: ignore[return-value]


async def _stream(  # noqa: PLR0917  (the request's parts, as chat_completions has them)
    request: Request,
    router: Router,
    req: ChatCompletionRequest,
    ctx: Exchange,
    caller: Caller,
    entry: str | None,
    headers: dict[str, str],
) -> Response:
    """Pull the first chunk before answering, so that errors found up front get a real status."""
    state = _state(request)
    accounting = _accounting(request)
    hide_usage = not req.wants_usage_chunk()  # asked for anyway: costs and the ledger need it
    routed = req.model_copy(update={"stream_options": StreamOptions(include_usage=True)}) if hide_usage else req
    chunks = router.stream(routed, ctx)
    try:
        first = await unless_disconnected(request.receive, anext(chunks), request.app.state.stopping)
    except ClientDisconnected:
        state["disconnected"] = True
        await _close(chunks)
        return Response(status_code=499)
    except BaseException:
        await _close(chunks)
        raise
    ctx.first_token_at = time.monotonic()
    state["model"] = first.model
    assembler = Assembler() if entry is not None or req.store else None  # only where the answer is kept
    state["streamed_chunks"] = 0

    def shown(chunk: ChatCompletionChunk) -> ChatCompletionChunk | None:
        if assembler is not None:
            assembler.add(chunk)
        state["streamed_chunks"] += len(chunk.choices)
        if chunk.usage is not None:
            _record_usage(state, chunk.model, chunk.usage)
        if hide_usage:
            if not chunk.choices:
                return None
            chunk.with_usage_field = False
        return chunk

    async def observed() -> AsyncIterator[ChatCompletionChunk]:
        async for chunk in chunks:
            out = shown(chunk)
            if out is not None:
                yield out
        await accounting.settle(state)
        completion = assembler.completion() if assembler is not None else None
        if completion is not None:
            await _keep(accounting, caller, req, completion, entry)

    head = shown(first)
    assert head is not None  # a stream's first chunk carries choices
    events = chunk_events(head, observed(), ctx.request_id)
    return EventStreamResponse(events, state, headers={**attempt_headers(ctx), **headers})  # type: ignore[return-value]


def attempt_headers(ctx: Exchange) -> dict[str, str]:
    """``x-chatgate-attempts``: how many upstream attempts the answer took (retries and fallbacks)."""
    return {"x-chatgate-attempts": str(ctx.attempts)} if ctx.attempts else {}


async def _close(chunks: Any) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


def _record_usage(state: dict[str, Any], model: str, usage: Usage | None) -> None:
    state["model"] = model
    if usage is not None:
        state["prompt_tokens"] = usage.prompt_tokens
        state["completion_tokens"] = usage.completion_tokens
        state["cached_tokens"] = usage.prompt_tokens_details.cached_tokens


async def list_models(request: Request) -> Response:
    caller = await identify(request)
    return _json(ModelList(data=[m for m in _router(request).models() if caller.allows(m.id)]))


async def get_model(request: Request) -> Response:
    caller = await identify(request)
    name = request.path_params["model_id"]
    if not caller.allows(name):
        raise ModelNotFoundError(name)
    return _json(_router(request).model(name))


async def health(request: Request) -> Response:
    engines = {
        backend.model_id: {**backend.engine.stats.summary(), "waiting": backend.engine.waiting}
        for backend in request.app.state.local_backends
    }
    return JSONResponse({"status": "ok", "models": [m.id for m in _router(request).models()], "engines": engines})


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
