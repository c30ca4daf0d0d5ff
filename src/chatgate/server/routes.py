"""The HTTP routes: chat completions, models, health."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatgate.context import RequestContext
from chatgate.errors import ChatgateError, ModelNotFoundError, RateLimitError
from chatgate.gateway.keys import KeyRecord
from chatgate.gateway.limiter import Limiter
from chatgate.protocol import ChatCompletion, ChatCompletionRequest, ModelList, Usage
from chatgate.protocol.validation import parse_chat_request
from chatgate.routing import Router
from chatgate.server.auth import Caller, Gatekeeper
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


async def _caller(request: Request) -> Caller:
    gate: Gatekeeper = request.app.state.gate
    caller = await gate.caller(request)
    if caller.key is not None:
        _state(request)["key_id"] = caller.key.id
    return caller


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


async def chat_completions(request: Request) -> Response:
    state = _state(request)
    caller = await _caller(request)
    body = await request.body()
    req = parse_chat_request(body)
    if not caller.allows(req.model):
        raise ModelNotFoundError(req.model)
    if caller.key is not None and (caller.key.rpm or caller.key.tpm):
        await _rate_limit(request, caller.key, len(body) // 4 + (req.completion_limit() or 0))
    state["model"] = req.model
    state["stream"] = bool(req.stream)
    ctx = RequestContext(request_id=state["request_id"])
    state["ctx"] = ctx
    router = _router(request)
    if req.stream:
        return await _stream(request, router, req, ctx)
    try:
        completion: ChatCompletion = await unless_disconnected(request.receive, router.complete(req, ctx))
    except ClientDisconnected:
        state["disconnected"] = True
        return Response(status_code=499)
    _record_usage(state, completion.model, completion.usage)
    return Response(completion.model_dump_json(), media_type="application/json", headers=attempt_headers(ctx))


async def _stream(request: Request, router: Router, req: ChatCompletionRequest, ctx: RequestContext) -> Response:
    """Pull the first chunk before answering, so that errors found up front get a real status."""
    state = _state(request)
    chunks = router.stream(req, ctx)
    try:
        first = await unless_disconnected(request.receive, anext(chunks))
    except ClientDisconnected:
        state["disconnected"] = True
        await _close(chunks)
        return Response(status_code=499)
    except BaseException:
        await _close(chunks)
        raise
    state["model"] = first.model

    async def observed() -> Any:
        async for chunk in chunks:
            if chunk.usage is not None:
                _record_usage(state, chunk.model, chunk.usage)
            yield chunk

    events = chunk_events(first, observed(), ctx.request_id)
    return EventStreamResponse(events, state, headers=attempt_headers(ctx))  # type: ignore[return-value]


def attempt_headers(ctx: RequestContext) -> dict[str, str]:
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
    caller = await _caller(request)
    return _json(ModelList(data=[m for m in _router(request).models() if caller.allows(m.id)]))


async def get_model(request: Request) -> Response:
    caller = await _caller(request)
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
