"""Responses items -> chat messages, and the conversation that ``truncation: auto`` keeps."""

from __future__ import annotations

from typing import Any

import pytest

from chatgate.errors import InvalidRequestError
from chatgate.protocol.responses_api import InputItem, ResponsesRequest
from chatgate.server.responses_translate import to_chat, to_messages, without_oldest_turn


def items(*raw: dict[str, Any]) -> list[InputItem]:
    return [InputItem.model_validate(r) for r in raw]


CALL = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
CALL2 = {"type": "function_call", "call_id": "c2", "name": "g", "arguments": '{"a": 1}'}


def test_calls_join_the_assistant_text_before_them_and_outputs_become_tool_messages() -> None:
    messages = to_messages(items(
        {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
        CALL, CALL2,
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
    ))  # fmt: skip
    assert [m.role for m in messages] == ["user", "assistant", "tool", "tool"]
    assert messages[0].content == "Hi" and messages[1].content == "Let me look."
    assert [c["id"] for c in messages[1].tool_calls or []] == ["c1", "c2"]
    assert [(m.tool_call_id, m.content) for m in messages[2:]] == [("c1", "one"), ("c2", "two")]


def test_calls_after_tool_results_start_a_new_assistant_message() -> None:
    messages = to_messages(items({"role": "user", "content": "x"}, CALL,
                                 {"type": "function_call_output", "call_id": "c1", "output": "1"}, CALL2,
                                 {"type": "function_call_output", "call_id": "c2", "output": "2"}))  # fmt: skip
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant", "tool"]


@pytest.mark.parametrize(
    "raw",
    [
        [{"type": "function_call_output", "call_id": "nope", "output": "x"}],
        [CALL],
        [CALL, {"role": "user", "content": "x"}, {"type": "function_call_output", "call_id": "c1", "output": "1"}],
    ],
)
def test_calls_and_outputs_must_pair(raw: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_messages(items(*raw))
    assert info.value.param == "input"


def test_request_fields_map_to_chat() -> None:
    req = ResponsesRequest.model_validate({
        "model": "m", "instructions": "Be brief.", "input": "Hi", "max_output_tokens": 20, "top_logprobs": 3,
        "include": ["message.output_text.logprobs"], "tools": [{"type": "function", "name": "f"},
                                                                {"type": "function", "name": "g"}],
        "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "g"}]},
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": True}},
        "stream": True, "store": True, "metadata": {"a": "b"},
    })  # fmt: skip
    chat = to_chat(req, req.items())
    assert [(m.role, m.content) for m in chat.messages] == [("system", "Be brief."), ("user", "Hi")]
    assert chat.max_completion_tokens == 20 and chat.logprobs and chat.top_logprobs == 3
    assert [t.function.name for t in chat.tools or [] if t.function] == ["g"] and chat.tool_choice == "required"
    assert chat.response_format is not None and chat.response_format.json_schema is not None
    assert chat.response_format.json_schema.schema_ == {"type": "object"}
    assert chat.stream and chat.wants_usage_chunk() and chat.store is None  # the chat layer stores nothing


def test_truncation_drops_whole_turns_from_the_start() -> None:
    conversation = items({"role": "developer", "content": "d"}, {"role": "user", "content": "1"}, CALL,
                         {"type": "function_call_output", "call_id": "c1", "output": "x"},
                         {"role": "assistant", "content": "a"}, {"role": "user", "content": "2"})  # fmt: skip
    once = without_oldest_turn(conversation)
    assert once is not None and [i.content for i in once][:1] == ["1"]
    twice = without_oldest_turn(once)
    assert twice is not None and [i.content for i in twice] == ["2"]
    assert without_oldest_turn(twice) is None
