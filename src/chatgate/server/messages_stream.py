"""A chat completion's chunks as the server-sent events of Anthropic's Messages API.

The sequence, as Anthropic sends it::

    message_start, ping,
    (content_block_start, content_block_delta*, content_block_stop)*   text_delta / input_json_delta
    message_delta (stop_reason, usage), message_stop

Each event is ``event: <type>`` then ``data: <json>``. An error after the first byte is an ``error`` event
and ends the stream. ``message_start`` carries ``input_tokens: 0``: the prompt's size is known at the
end, and ``message_delta`` carries it (the SDKs' accumulators take the later, cumulative count).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from chatgate.backends.upstream_errors import ANTHROPIC
from chatgate.errors import ChatgateError, InternalError
from chatgate.protocol import ChatCompletionChunk, Usage
from chatgate.protocol.messages import Message, StopReason
from chatgate.server.messages_translate import message_id, message_usage, stop_reason
from chatgate.streams import aclose

log = logging.getLogger("chatgate.server")


def sse(payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"event: {payload['type']}\ndata: {data}\n\n".encode()


@dataclass
class _Blocks:
    """The content blocks opened so far; at most one is open at a time."""

    index: int = -1
    open: str | None = None
    """``text`` or ``tool_use`` while a block is open."""
    call: int | None = None
    """The chat tool call index of the open ``tool_use`` block."""
    calls: int = 0
    stop_reason: StopReason | None = None
    usage: Usage | None = None

    def close(self) -> Iterator[dict[str, Any]]:
        if self.open is not None:
            yield {"type": "content_block_stop", "index": self.index}
            self.open, self.call = None, None

    def start(self, block: dict[str, Any], kind: str) -> Iterator[dict[str, Any]]:
        yield from self.close()
        self.index += 1
        self.open = kind
        yield {"type": "content_block_start", "index": self.index, "content_block": block}

    def feed(self, chunk: ChatCompletionChunk) -> Iterator[dict[str, Any]]:
        """The events one chunk makes (its first choice only: a Messages answer has one)."""
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices[:1]:
            delta = choice.delta
            if delta.content:
                if self.open != "text":
                    yield from self.start({"type": "text", "text": ""}, "text")
                yield self._delta({"type": "text_delta", "text": delta.content})
            for call in delta.tool_calls or []:
                if call.index != self.call or self.open != "tool_use":
                    name = (call.function or {}).get("name", "")
                    block = {"type": "tool_use", "id": call.id or f"toolu_{self.index + 1}", "name": name, "input": {}}
                    yield from self.start(block, "tool_use")
                    self.call = call.index
                    self.calls += 1
                arguments = (call.function or {}).get("arguments")
                if arguments:
                    yield self._delta({"type": "input_json_delta", "partial_json": arguments})
            if choice.finish_reason is not None:  # a forced tool's call finishes "stop" in chat, as OpenAI's
                self.stop_reason = stop_reason(choice.finish_reason, called=self.calls > 0)

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self.index, "delta": delta}

    def end(self) -> Iterator[dict[str, Any]]:
        yield from self.close()
        usage = message_usage(self.usage).model_dump()
        yield {"type": "message_delta", "delta": {"stop_reason": self.stop_reason or "end_turn", "stop_sequence": None},
               "usage": usage}  # fmt: skip
        yield {"type": "message_stop"}


def message_start(first: ChatCompletionChunk) -> dict[str, Any]:
    start = Message(id=message_id(first.id), content=[], model=first.model, usage=message_usage(None))
    return {"type": "message_start", "message": start.model_dump()}


async def message_events(
    first: ChatCompletionChunk, rest: AsyncIterator[ChatCompletionChunk], request_id: str
) -> AsyncIterator[bytes]:
    """SSE bytes of the whole answer; ``rest`` is closed however this ends (its ``finally`` settles the cost)."""
    blocks = _Blocks()
    try:
        yield sse(message_start(first))
        yield sse({"type": "ping"})
        for event in blocks.feed(first):
            yield sse(event)
        async for chunk in rest:
            for event in blocks.feed(chunk):
                yield sse(event)
        for event in blocks.end():
            yield sse(event)
    except ChatgateError as exc:
        yield sse(error_body(exc))
    except Exception:
        log.exception("stream failed", extra={"fields": {"request_id": request_id}})
        yield sse(error_body(InternalError("The server had an error while streaming your response.")))
    finally:
        await aclose(rest)


ERROR_TYPES: dict[int, str] = {status: kind for kind, status in ANTHROPIC.event_statuses.items()}
"""Anthropic's error type of each status."""


def error_status(exc: ChatgateError) -> int:
    """The status Anthropic would answer: 503 (overloaded, shutting down) is its 529."""
    return 529 if exc.status == 503 else exc.status


def error_body(exc: ChatgateError) -> dict[str, Any]:
    status = error_status(exc)
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": exc.message}}
