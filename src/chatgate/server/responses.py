"""OpenAI's Responses API: ``POST /v1/responses`` (plain or streamed), and the stored responses
(``GET``/``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``, ``POST …/cancel`` for
background responses).

A request is parsed, its conversation put together (a ``previous_response_id``'s stored items, then its
own ``input`` with each ``item_reference`` resolved), translated to a chat request and answered by the
same Gateway as Chat Completions (keys, limits, budgets, the cache and the ledger hold, with
``endpoint: responses``); the answer is translated back, and kept when ``store`` (true by default) says so.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any, Literal, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatgate.errors import ChatgateError, InvalidRequestError, ModelNotFoundError
from chatgate.exchange import Exchange
from chatgate.gateway.responses_store import StoredResponses
from chatgate.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from chatgate.protocol.responses_api import ResponsesRequest
from chatgate.protocol.responses_objects import Response as ResponseObject
from chatgate.protocol.responses_objects import StreamEvent
from chatgate.protocol.responses_validation import parse_responses_request
from chatgate.server.auth import identify
from chatgate.server.deps import gateway_of, limits_of, runtime_of, stopping_of
from chatgate.server.limits import parse_body
from chatgate.server.middleware import exchange_of
from chatgate.server.responses_background import Job, background_of, cancel, queue
from chatgate.server.responses_flow import conversation, keep, responses_param, stream_events, truncating
from chatgate.server.responses_stream import EventWriter, encode
from chatgate.server.responses_translate import completed, skeleton
from chatgate.server.routes import CACHE_HEADER, DISCONNECTED, cache_asked, cache_headers
from chatgate.server.sse import ClientDisconnected, EventStreamResponse, unless_disconnected
from chatgate.streams import aclose


async def create_response(request: Request) -> Response:
    ex = exchange_of(request)
    ex.endpoint = "responses"
    caller = await identify(request)
    body = await request.body()
    ex.body_bytes = len(body)
    req = await parse_body(functools.partial(parse_responses_request, limits=limits_of(request)), body)
    ex.model_asked, ex.stream = req.model, bool(req.stream)
    if not caller.allows(req.model):
        raise ModelNotFoundError(req.model)
    ex.cache_asked = cache_asked(request.headers.get(CACHE_HEADER))
    store = StoredResponses(runtime_of(request).database)
    items = await conversation(store, ex.owner, req)
    response = skeleton(req, req.model)
    if req.stream:
        return await _stream(request, req, ex=ex, response=response, items=items)
    if req.background:
        return await _background(request, Job(req, items, response, gateway_of(request), store, _job_exchange(ex)))

    async def answer(chat: ChatCompletionRequest) -> ChatCompletion:
        return await unless_disconnected(request.receive, gateway_of(request).complete(chat, ex), stopping_of(request))

    try:
        completion = await truncating(req, items, answer)
    except ClientDisconnected:
        ex.disconnected = True
        return Response(status_code=DISCONNECTED)
    except ChatgateError as exc:
        raise responses_param(exc) from None
    response = completed(response, completion)
    if req.stored:
        await keep(store, ex, response, items)
    return Response(response.model_dump_json(), media_type="application/json", headers=cache_headers(ex))


async def _stream(
    request: Request, req: ResponsesRequest, *, ex: Exchange, response: ResponseObject, items: list[dict[str, Any]]
) -> Response:
    """Pull the first chunk before answering, so that errors found up front get a real status."""

    async def start(chat: ChatCompletionRequest) -> tuple[ChatCompletionChunk, AsyncIterator[ChatCompletionChunk]]:
        chunks = gateway_of(request).stream(chat, ex)
        try:
            return await unless_disconnected(request.receive, anext(chunks), stopping_of(request)), chunks
        except BaseException:
            await aclose(chunks)
            raise

    try:
        first, chunks = await truncating(req, items, start)
    except ClientDisconnected:
        ex.disconnected = True
        return Response(status_code=DISCONNECTED)
    except ChatgateError as exc:
        raise responses_param(exc) from None
    writer = EventWriter(response.model_copy(update={"model": first.model}), obfuscate=req.obfuscated)
    store = StoredResponses(runtime_of(request).database) if req.stored else None
    events = _sse(stream_events(writer, first, chunks, ex=ex, store=store, items=items))
    return EventStreamResponse(events, ex, headers=cache_headers(ex))  # type: ignore[return-value]


def _job_exchange(ex: Exchange) -> Exchange:
    """The metered exchange of a background response (the request's id, key, model and size); the HTTP
    exchange that queues it is not metered."""
    job = Exchange(request_id=ex.request_id, endpoint="responses", grant=ex.grant, model_asked=ex.model_asked,
                   body_bytes=ex.body_bytes, cache_asked=ex.cache_asked)  # fmt: skip
    ex.endpoint = ""
    return job


async def _background(request: Request, job: Job) -> Response:
    queued = await queue(job, background_of(request.app))
    return Response(queued.model_dump_json(), media_type="application/json")


async def _sse(events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield encode(event)
    finally:
        await aclose(events)


# --- stored responses ---------------------------------------------------------------------------


async def _scope(request: Request) -> tuple[StoredResponses, str]:
    """The stored responses and whose of them the caller may see (its key's, or the admin's)."""
    caller = await identify(request)
    return StoredResponses(runtime_of(request).database), caller.key.id if caller.key is not None else ""


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return 20
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= 100:
        raise InvalidRequestError("limit must be an integer between 1 and 100.", param="limit",
                                  code="invalid_value")  # fmt: skip
    return int(raw)


def _order(request: Request) -> Literal["asc", "desc"]:
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequestError("order must be 'asc' or 'desc'.", param="order", code="invalid_value")
    return cast(Literal["asc", "desc"], order)


async def get_response(request: Request) -> Response:
    store, who = await _scope(request)
    found = await store.get(who, request.path_params["response_id"])
    return Response(found.model_dump_json(), media_type="application/json")


async def delete_response(request: Request) -> Response:
    store, who = await _scope(request)
    return JSONResponse(await store.delete(who, request.path_params["response_id"]))


async def cancel_response(request: Request) -> Response:
    store, who = await _scope(request)
    found = await cancel(store, who, request.path_params["response_id"], background_of(request.app))
    return Response(found.model_dump_json(), media_type="application/json")


async def list_input_items(request: Request) -> Response:
    store, who = await _scope(request)
    page = await store.input_items(who, request.path_params["response_id"], after=request.query_params.get("after"),
                                   limit=_limit(request), order=_order(request))  # fmt: skip
    return JSONResponse(page.body())


def responses_routes() -> list[Route]:
    out: list[Route] = []
    for prefix in ("/v1", "/api/v1"):
        base = f"{prefix}/responses"
        out += [
            Route(base, create_response, methods=["POST"]),
            Route(f"{base}/{{response_id}}", get_response, methods=["GET"]),
            Route(f"{base}/{{response_id}}", delete_response, methods=["DELETE"]),
            Route(f"{base}/{{response_id}}/cancel", cancel_response, methods=["POST"]),
            Route(f"{base}/{{response_id}}/input_items", list_input_items, methods=["GET"]),
        ]
    return out


__all__ = ["responses_routes"]
