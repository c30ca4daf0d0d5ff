"""The Responses API's steps that do not depend on HTTP, shared by the server's route and the in-process
client: the conversation a request answers (stored turns, item references), ``truncation``, errors named
in the Responses API's parameters, the stream's events and keeping the response."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from chatgate.errors import ChatgateError, ContextLengthExceededError, InternalError, InvalidRequestError
from chatgate.exchange import Exchange
from chatgate.gateway.responses_store import StoredResponses
from chatgate.protocol import ChatCompletionChunk, ChatCompletionRequest
from chatgate.protocol.responses_api import InputItem, ResponsesRequest
from chatgate.protocol.responses_objects import Response, StreamEvent
from chatgate.server.responses_stream import EventWriter
from chatgate.server.responses_translate import item_json, to_chat, without_oldest_turn
from chatgate.streams import aclose

log = logging.getLogger("chatgate.server")
T = TypeVar("T")
Start = Callable[[ChatCompletionRequest], Awaitable[T]]

_PARAMS = {  # chat's parameter -> the Responses API's, for errors found below the server
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "response_format": "text.format",
    "verbosity": "text.verbosity",
    "logprobs": "include",
}


def responses_param(error: ChatgateError) -> ChatgateError:
    """An error from the chat layers, its ``param`` named as the Responses API names it."""
    if error.param is not None:
        head = error.param.split(".", 1)[0].split("[", 1)[0]
        if head in _PARAMS:
            error.param = _PARAMS[head] if head == "messages" else _PARAMS[head] + error.param[len(head) :]
    return error


async def truncating(req: ResponsesRequest, items: list[dict[str, Any]], start: Start[T]) -> T:
    """``start`` the chat request of the conversation; with ``truncation: auto``, one too long for the model's
    context loses its oldest turns until it fits (``disabled``: the 400 ``context_length_exceeded``)."""
    conversation = [InputItem.model_validate(item) for item in items]
    while True:
        try:
            return await start(to_chat(req, conversation))
        except ContextLengthExceededError:
            shorter = without_oldest_turn(conversation) if req.truncation == "auto" else None
            if shorter is None:
                raise
            conversation = shorter


async def conversation(store: StoredResponses, owner: str, req: ResponsesRequest) -> list[dict[str, Any]]:
    """Every item the request answers, as stored: the previous response's conversation, then ``input``
    with each ``item_reference`` replaced by the item it names (400 when the caller stored no such item)."""
    earlier = (await store.conversation(owner, req.previous_response_id)).items() if req.previous_response_id else []
    new = req.items()
    known = {str(item.get("id")): item for item in earlier}
    wanted = [item.id for item in new if item.kind == "item_reference" and item.id not in known]
    known |= await store.output_items(owner, [w for w in wanted if w is not None])
    out = list(earlier)
    for i, item in enumerate(new):
        if item.kind != "item_reference":
            out.append(item_json(item))
        elif item.id in known:
            out.append(known[item.id])
        else:
            raise InvalidRequestError(f"Item with id '{item.id}' not found.", param=f"input[{i}].id",
                                      code="item_not_found")  # fmt: skip
    return out


async def keep(store: StoredResponses, ex: Exchange, response: Response, items: list[dict[str, Any]]) -> None:
    """Store the response; a failure to store never fails the answer (it is logged)."""
    try:
        await store.save(ex.owner, response, items)
    except Exception as exc:
        log.error("storing a response failed (%s)", type(exc).__name__,
                  extra={"fields": {"request_id": ex.request_id}})  # fmt: skip


async def stream_events(
    writer: EventWriter,
    first: ChatCompletionChunk,
    rest: AsyncIterator[ChatCompletionChunk],
    *,
    ex: Exchange,
    store: StoredResponses | None,
    items: list[dict[str, Any]],
) -> AsyncIterator[StreamEvent]:
    """The events of a streamed answer whose first chunk is ``first``; the response is stored before its last
    event goes out (so that a client may continue from it at once). ``rest`` is closed however this ends."""
    failure: ChatgateError | None = None
    try:
        for event in writer.start() + writer.add(first):
            yield event
        async for chunk in rest:
            for event in writer.add(chunk):
                yield event
    except ChatgateError as exc:
        failure = responses_param(exc)
    except Exception:
        log.exception("stream failed", extra={"fields": {"request_id": ex.request_id}})
        failure = InternalError("The server had an error while streaming your response.")
    finally:
        await aclose(rest)
    last = writer.fail(failure) if failure is not None else writer.end(ex.model_answered)
    if store is not None:
        await keep(store, ex, writer.response, items)
    for event in last:
        yield event
