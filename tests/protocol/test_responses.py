"""Response objects read as the SDK reads them and as mappings of their JSON, with one wire format."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatgate.protocol import AssistantMessage, ChatCompletion, ChatCompletionChunk, Choice, ChunkChoice, Delta, Usage
from chatgate.protocol.responses import FunctionCall, ToolCall, _Out

CALL = ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Paris"}'))
OBJECTS: list[_Out] = [
    AssistantMessage(content="Hi"),
    AssistantMessage(content=None, tool_calls=[CALL]),
    Delta(content="x"),
    Delta(role="assistant", content=""),
    Delta(),
    Usage.of(3, 4, cached=1),
    ChatCompletionChunk(id="c", created=1, model="m", choices=[ChunkChoice(index=0, delta=Delta(content="a"))]),
    ChatCompletionChunk(id="c", created=1, model="m", choices=[], usage=Usage.of(1, 2), with_usage_field=True),
    ChatCompletionChunk(id="c", created=1, model="m", choices=[], with_usage_field=True),
]


def _wire(obj: _Out) -> Any:
    """The object as a mapping, all the way down, as it would be JSON."""
    if isinstance(obj, _Out):
        return {key: _wire(obj[key]) for key in obj}
    if isinstance(obj, list):
        return [_wire(x) for x in obj]
    return obj


@pytest.mark.parametrize("obj", OBJECTS, ids=[f"{type(o).__name__}-{i}" for i, o in enumerate(OBJECTS)])
def test_the_mapping_view_is_the_json(obj: _Out) -> None:
    assert _wire(obj) == json.loads(obj.model_dump_json())
    assert dict(obj) == {**obj} == dict(obj.items())  # dict(), ** and items() agree on the JSON's keys
    assert list(obj.values()) == [obj[k] for k in obj] and len(obj) == len(obj.keys())


def test_keys_left_out_of_the_json_are_missing_from_the_mapping() -> None:
    message = AssistantMessage(content="Hi")
    assert message["content"] == message.content == "Hi" and "content" in message
    assert "tool_calls" not in message and message.get("tool_calls") is None and message.get("tool_calls", 5) == 5
    with pytest.raises(KeyError):
        message["tool_calls"]
    with pytest.raises(KeyError):
        message["nope"]
    chunk = ChatCompletionChunk(id="c", created=1, model="m", choices=[])
    assert "usage" not in chunk and "with_usage_field" not in chunk


def test_nested_objects_are_the_same_either_way() -> None:
    message = AssistantMessage(content=None, tool_calls=[CALL])
    choice = Choice(index=0, message=message, finish_reason="tool_calls")
    completion = ChatCompletion(id="c", created=1, model="m", usage=Usage.of(2, 3), choices=[choice])
    assert completion["choices"][0]["message"] is completion.choices[0].message is message
    assert message["tool_calls"][0]["function"]["name"] == "get_weather"
    assert completion.usage is not None and completion["usage"]["total_tokens"] == 5


def test_an_object_whose_json_is_empty_is_still_true() -> None:
    empty = Delta()
    assert len(empty) == 0
    assert empty and bool(empty)  # `if delta:` means "there is a delta", as with the SDK's objects
