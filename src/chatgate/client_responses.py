"""The in-process client's ``client.responses.create``: the Responses API answered by the runtime's own
Gateway (no server), with the same validation, conversation state (stored responses, ``previous_response_id``,
``item_reference``), ``truncation`` and events as ``POST /v1/responses``, and a ledger row per response
(``endpoint: responses``). Stored responses belong to the open owner (``""``), as the admin's do."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from chatgate.errors import ChatgateError, UnsupportedParameterError
from chatgate.exchange import Exchange
from chatgate.gateway.responses_store import StoredResponses
from chatgate.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from chatgate.protocol.responses_api import ResponsesRequest
from chatgate.protocol.responses_objects import Response, StreamEvent
from chatgate.protocol.responses_validation import parse_responses_request
from chatgate.runtime import Runtime
from chatgate.server.responses_flow import conversation, keep, responses_param, stream_events, truncating
from chatgate.server.responses_stream import EventWriter
from chatgate.server.responses_translate import completed, skeleton
from chatgate.streams import aclose


async def create(runtime: Runtime, body: bytes) -> Response | AsyncGenerator[StreamEvent, None]:
    """The response to a request ``body`` (its JSON), or with ``stream: true`` its events."""
    req = parse_responses_request(body, runtime.settings.limits)
    if req.background:
        raise UnsupportedParameterError("The in-process client answers no response in the background.",
                                        param="background")  # fmt: skip
    ex = Exchange(request_id="req_" + uuid.uuid4().hex, endpoint="responses", model_asked=req.model,
                  stream=bool(req.stream), body_bytes=len(body))  # fmt: skip
    store = StoredResponses(runtime.database)
    items = await conversation(store, ex.owner, req)
    if req.stream:
        return _stream(runtime, req, ex, store, items)

    def answer(chat: ChatCompletionRequest) -> Any:
        return runtime.gateway.complete(chat, ex)

    try:
        completion: ChatCompletion = await truncating(req, items, answer)
    except ChatgateError as exc:
        _finish(runtime, ex, exc)
        raise responses_param(exc) from None
    _finish(runtime, ex)
    response = completed(skeleton(req, req.model), completion)
    if req.stored:
        await keep(store, ex, response, items)
    return response


async def _stream(
    runtime: Runtime, req: ResponsesRequest, ex: Exchange, store: StoredResponses, items: list[dict[str, Any]]
) -> AsyncGenerator[StreamEvent, None]:
    async def start(chat: ChatCompletionRequest) -> tuple[ChatCompletionChunk, AsyncIterator[ChatCompletionChunk]]:
        chunks = runtime.gateway.stream(chat, ex)
        try:
            return await anext(chunks), chunks
        except BaseException:
            await aclose(chunks)
            raise

    error: ChatgateError | None = None
    try:
        first, chunks = await truncating(req, items, start)
        writer = EventWriter(skeleton(req, first.model), obfuscate=req.obfuscated)
        events = stream_events(writer, first, chunks, ex=ex, store=store if req.stored else None, items=items)
        try:
            async for event in events:
                yield event
        finally:
            await aclose(events)
    except ChatgateError as exc:
        error = exc
        raise responses_param(exc) from None
    except BaseException:  # closed early by the caller: as a client that disconnects
        ex.disconnected = True
        raise
    finally:
        _finish(runtime, ex, error)


def _finish(runtime: Runtime, ex: Exchange, error: ChatgateError | None = None) -> None:
    """The exchange's ledger row and metrics, as the server's middleware writes them."""
    ex.finished_at = time.monotonic()
    ex.status = 499 if ex.disconnected else error.status if error is not None else 200
    ex.error_type = error.type if error is not None else None
    runtime.gateway.finish(ex)
