"""OpenAI's legacy text completions: ``POST /v1/completions``, the prompt completed as it is (no chat
template), through the Gateway (``endpoint`` ``completions``): keys, budgets, rate limits, the cache, the
ledger and ``/metrics`` hold as for chat. Served by models whose every deployment completes raw prompts
(the local models); others answer a 400."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatgate.config import LimitsConfig
from chatgate.errors import ChatgateError, InternalError, ModelNotFoundError, UnsupportedParameterError
from chatgate.exchange import Exchange
from chatgate.protocol import ChatCompletion, ChatCompletionChunk
from chatgate.protocol.text_completions import CompletionRequest, RawPromptRequest
from chatgate.protocol.validation import check_semantics, parse_model
from chatgate.server.auth import identify
from chatgate.server.deps import gateway_of, limits_of, stopping_of
from chatgate.server.limits import parse_body
from chatgate.server.middleware import exchange_of
from chatgate.server.routes import CACHE_HEADER, DISCONNECTED, cache_asked, cache_headers, pull_first
from chatgate.server.sse import DONE, ClientDisconnected, EventStreamResponse, encode_event, unless_disconnected
from chatgate.server.text_completions_translate import Chunks, completion, raw_request
from chatgate.streams import aclose

log = logging.getLogger("chatgate.server")


@runtime_checkable
class ServesRawPrompts(Protocol):
    """A backend that completes a :class:`RawPromptRequest`'s prompt as it is."""

    serves_raw_prompts: bool


def parse_completion(body: bytes, limits: LimitsConfig) -> tuple[CompletionRequest, RawPromptRequest]:
    req = parse_model(CompletionRequest, body, limits)
    raw = raw_request(req)
    check_semantics(raw)
    return req, raw


def check_served(request: Request, raw: RawPromptRequest, ex: Exchange) -> None:
    """Every deployment that might answer (fallbacks included) must complete raw prompts."""
    for deployment in gateway_of(request).router.deployments(raw, ex):
        backend = deployment.backend
        if not (isinstance(backend, ServesRawPrompts) and backend.serves_raw_prompts):
            raise UnsupportedParameterError(
                f"The model '{raw.model}' (deployment {deployment.label}) does not serve legacy completions here; "
                "use /v1/chat/completions.",
                param="model",
            )


async def completions(request: Request) -> Response:
    ex = exchange_of(request)
    ex.endpoint = "completions"
    caller = await identify(request)
    body = await request.body()
    ex.body_bytes = len(body)
    req, raw = await parse_body(functools.partial(parse_completion, limits=limits_of(request)), body)
    ex.model_asked, ex.stream = req.model, bool(req.stream)
    if not caller.allows(req.model):
        raise ModelNotFoundError(req.model)
    check_served(request, raw, ex)
    ex.cache_asked = cache_asked(request.headers.get(CACHE_HEADER))
    echo = raw.prompt if req.echo and isinstance(raw.prompt, str) else ""
    if raw.stream:
        return await _stream(request, raw, ex, echo)
    try:
        chat: ChatCompletion = await unless_disconnected(
            request.receive, gateway_of(request).complete(raw, ex), stopping_of(request)
        )
    except ClientDisconnected:
        ex.disconnected = True
        return Response(status_code=DISCONNECTED)
    return Response(completion(chat, echo).model_dump_json(), media_type="application/json",
                    headers=cache_headers(ex))  # fmt: skip


async def _stream(request: Request, raw: RawPromptRequest, ex: Exchange, echo: str) -> Response:
    chunks = gateway_of(request).stream(raw, ex)
    first = await pull_first(request, chunks, ex)
    if first is None:
        return Response(status_code=DISCONNECTED)
    events = _events(first, chunks, Chunks(echo), raw.wants_usage_chunk())
    return EventStreamResponse(events, ex, headers=cache_headers(ex))  # type: ignore[return-value]


async def _events(
    first: ChatCompletionChunk, rest: AsyncIterator[ChatCompletionChunk], chunks: Chunks, include_usage: bool
) -> AsyncIterator[bytes]:
    """SSE bytes: the text completion chunks, an ``error`` event if the stream fails midway, ``[DONE]``."""

    def event(chunk: ChatCompletionChunk) -> bytes | None:
        out = chunks.of(chunk)
        return encode_event(out.chunk_json(include_usage)) if out is not None else None

    try:
        if (data := event(first)) is not None:
            yield data
        async for chunk in rest:
            if (data := event(chunk)) is not None:
                yield data
    except ChatgateError as exc:
        yield encode_event(exc.body())
    except Exception:
        log.exception("stream failed")
        yield encode_event(InternalError("The server had an error while streaming your response.").body())
    finally:
        await aclose(rest)
    yield DONE


def text_completion_routes() -> list[Route]:
    return [Route(f"{prefix}/completions", completions, methods=["POST"]) for prefix in ("/v1", "/api/v1")]


__all__ = ["text_completion_routes"]
