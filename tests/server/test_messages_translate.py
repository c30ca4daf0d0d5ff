"""The Messages API's translation to and from chat, and its event stream, without a server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatgate.errors import InvalidRequestError, OverloadedError, RateLimitError, ShuttingDownError
from chatgate.protocol import ChatCompletionChunk, ChunkChoice, Delta, Usage
from chatgate.protocol.messages import MessagesRequest
from chatgate.protocol.responses import ToolCallDelta
from chatgate.server.messages_stream import error_body, error_status, message_events
from chatgate.server.messages_translate import chat_request

TOOL = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def parse(**fields: Any) -> MessagesRequest:
    return MessagesRequest.model_validate_json(json.dumps({"model": "m", "max_tokens": 10, **fields}))


def test_a_conversation_with_tools_becomes_chat_messages() -> None:
    req = parse(
        system=[{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me see."},
                    {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "21C"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
        tools=[TOOL],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        stop_sequences=["END"],
        top_k=5,
        metadata={"user_id": "u1"},
    )
    chat = chat_request(req)
    assert [(m.role, m.text()) for m in chat.messages] == [
        ("system", "A\n\nB"),
        ("user", "Weather?"),
        ("assistant", "Let me see."),
        ("tool", "21C"),
        ("user", "And tomorrow?"),
    ]
    assert chat.messages[2].tool_calls == [
        {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    ]
    assert chat.messages[3].tool_call_id == "t1"
    assert chat.tool_choice == "required" and chat.parallel_tool_calls is False
    assert chat.tools is not None and chat.tools[0].function is not None
    assert chat.tools[0].function.parameters == TOOL["input_schema"]
    assert (chat.stop, chat.top_k, chat.user, chat.max_tokens) == (["END"], 5, "u1", 10)


def test_an_error_tool_result_says_so_and_images_become_data_urls() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"}}
    req = parse(
        messages=[
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "is_error": True,
                        "content": [{"type": "text", "text": "boom"}],
                    },
                    image,
                ],
            },
        ]
    )
    chat = chat_request(req)
    assert chat.messages[1].text() == "Error: boom"
    part = chat.messages[2].content[0]  # type: ignore[index]
    assert not isinstance(part, str) and part.type == "image_url"
    assert part.image_url == {"url": "data:image/png;base64,QUJD"}


def test_a_tool_result_must_answer_the_turn_before() -> None:
    req = parse(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope"}]}])
    with pytest.raises(InvalidRequestError, match="nope"):
        chat_request(req)


def test_errors_get_anthropics_types_and_statuses() -> None:
    assert (error_status(OverloadedError("x")), error_body(OverloadedError("x"))["error"]["type"]) == (
        529,
        "overloaded_error",
    )
    assert error_status(ShuttingDownError("x")) == 529
    assert error_body(RateLimitError("slow"))["error"] == {"type": "rate_limit_error", "message": "slow"}
    assert error_body(InvalidRequestError("bad"))["type"] == "error"


def chunk(delta: Delta | None = None, finish: Any = None, usage: Usage | None = None) -> ChatCompletionChunk:
    choices = [] if delta is None else [ChunkChoice(index=0, delta=delta, finish_reason=finish)]
    return ChatCompletionChunk(id="chatcmpl-1", created=0, model="m", choices=choices, usage=usage)


async def events(chunks: list[ChatCompletionChunk], fail: Exception | None = None) -> list[dict[str, Any]]:
    async def rest() -> AsyncIterator[ChatCompletionChunk]:
        for c in chunks[1:]:
            yield c
        if fail is not None:
            raise fail

    out = []
    async for raw in message_events(chunks[0], rest(), "req_1"):
        name, data = raw.decode().removesuffix("\n\n").split("\n")
        out.append(json.loads(data.removeprefix("data: ")))
        assert name == "event: " + out[-1]["type"]
    return out


def test_text_then_two_tool_calls_make_three_blocks() -> None:
    call = ToolCallDelta
    got = asyncio.run(
        events(
            [
                chunk(Delta(role="assistant", content="")),
                chunk(Delta(content="Hi")),
                chunk(
                    Delta(tool_calls=[call(index=0, id="c0", type="function", function={"name": "f", "arguments": ""})])
                ),
                chunk(Delta(tool_calls=[call(index=0, function={"arguments": "{}"})])),
                chunk(
                    Delta(
                        tool_calls=[call(index=1, id="c1", type="function", function={"name": "g", "arguments": "{"})]
                    )
                ),
                chunk(Delta(tool_calls=[call(index=1, function={"arguments": "}"})])),
                chunk(Delta(), finish="tool_calls"),
                chunk(usage=Usage.of(7, 3, cached=2)),
            ]
        )
    )
    types = [(e["type"], e.get("index")) for e in got]
    assert types == [
        ("message_start", None),
        ("ping", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert got[5]["content_block"] == {"type": "tool_use", "id": "c0", "name": "f", "input": {}}
    assert got[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert got[-2]["usage"] == {
        "input_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 2,
        "output_tokens": 3,
    }


def test_a_failure_midway_is_an_error_event_that_ends_the_stream() -> None:
    got = asyncio.run(events([chunk(Delta(content="Hi"))], fail=OverloadedError("busy")))
    assert [e["type"] for e in got] == ["message_start", "ping", "content_block_start", "content_block_delta", "error"]
    assert got[-1] == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
