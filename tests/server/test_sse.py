"""The SSE encoder: an error after the first byte becomes an ``error`` event, then ``[DONE]``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from chatgate.errors import OverloadedError
from chatgate.protocol import ChatCompletionChunk, ChunkChoice, Delta
from chatgate.server.sse import chunk_events


def chunk(text: str) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        id="chatcmpl-1", created=1, model="m", choices=[ChunkChoice(index=0, delta=Delta(content=text))]
    )


async def collect(events: AsyncIterator[bytes]) -> list[bytes]:
    return [e async for e in events]


def test_a_failure_mid_stream_is_an_error_event_and_the_stream_still_ends_cleanly() -> None:
    async def failing() -> AsyncIterator[ChatCompletionChunk]:
        yield chunk("b")
        raise OverloadedError("engine went away")

    events = asyncio.run(collect(chunk_events(chunk("a"), failing(), "req_1")))
    assert events[-1] == b"data: [DONE]\n\n"
    error = json.loads(events[-2][len(b"data: ") :])
    assert error == {
        "error": {"message": "engine went away", "type": "server_error", "param": None, "code": "overloaded"}
    }
    assert [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:2]] == ["a", "b"]


def test_an_unexpected_exception_mid_stream_leaks_no_internals() -> None:
    async def broken() -> AsyncIterator[ChatCompletionChunk]:
        raise RuntimeError("secret internal detail")
        yield chunk("never")

    events = asyncio.run(collect(chunk_events(chunk("a"), broken(), "req_2")))
    assert b"secret" not in b"".join(events)
    assert json.loads(events[1][6:])["error"]["type"] == "server_error"
    assert events[-1] == b"data: [DONE]\n\n"
