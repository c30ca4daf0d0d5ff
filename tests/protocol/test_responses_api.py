"""The Responses API request: parsed within the limits, every fault OpenAI's 400 with param and code."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatgate.config import LimitsConfig
from chatgate.errors import InvalidRequestError
from chatgate.protocol.responses_api import ResponsesRequest
from chatgate.protocol.responses_validation import parse_responses_request


def parse(body: dict[str, Any], limits: LimitsConfig | None = None) -> ResponsesRequest:
    return parse_responses_request(json.dumps(body).encode(), limits)


def refused(body: dict[str, Any], limits: LimitsConfig | None = None) -> tuple[str | None, str | None]:
    with pytest.raises(InvalidRequestError) as info:
        parse(body, limits)
    assert info.value.status == 400
    return info.value.param, info.value.code


def test_string_input_is_one_user_message_and_store_defaults_to_true() -> None:
    req = parse({"model": "gpt-4.1", "input": "Hello"})
    [item] = req.items()
    assert (item.kind, item.role, item.content) == ("message", "user", "Hello")
    assert req.stored and req.obfuscated and not req.wants_logprobs


def test_items_of_every_kind_parse() -> None:
    req = parse({"model": "m", "store": False, "include": ["message.output_text.logprobs"], "input": [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]},
        {"type": "item_reference", "id": "msg_1"},
    ]})  # fmt: skip
    assert [i.kind for i in req.items()] == ["message", "message", "function_call", "function_call_output",
                                             "message", "item_reference"]  # fmt: skip
    assert not req.stored and req.wants_logprobs


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "m"}, "input", "missing_required_parameter"),
        ({"input": "x"}, "model", "missing_required_parameter"),
        ({"model": "m", "input": "x", "temperature": "1"}, "temperature", "invalid_type"),
        ({"model": "m", "input": "x", "temperature": 3}, "temperature", "decimal_above_max_value"),
        ({"model": "m", "input": "x", "max_output_tokens": 5}, "max_output_tokens", "integer_below_min_value"),
        ({"model": "m", "input": "x", "top_logprobs": 21}, "top_logprobs", "integer_above_max_value"),
        ({"model": "m", "input": "x", "truncation": "x"}, "truncation", "invalid_value"),
        ({"model": "m", "input": "x", "include": ["nope"]}, "include[0]", "invalid_value"),
        ({"model": "m", "input": [{"type": "web_search_call", "id": "ws"}]}, "input[0].type", "invalid_value"),
        ({"model": "m", "input": [{"content": "x"}]}, "input[0].role", "missing_required_parameter"),
        ({"model": "m", "input": [{"role": "user"}]}, "input[0].content", "missing_required_parameter"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
            "input[0].content[0].type",
            "invalid_value",
        ),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input[0].content[0].text",
            "missing_required_parameter",
        ),
        (
            {"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
            "missing_required_parameter",
        ),
        (
            {"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]},
            "input[0].output",
            "missing_required_parameter",
        ),
        ({"model": "m", "input": [{"type": "item_reference"}]}, "input[0].id", "missing_required_parameter"),
        ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_parameter"),
        (
            {"model": "m", "input": "x", "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]},
            "tools[0].type",
            "unsupported_parameter",
        ),
        ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name", "missing_required_parameter"),
        (
            {"model": "m", "input": "x", "tools": [{"type": "function", "name": "bad name"}]},
            "tools[0].name",
            "invalid_value",
        ),
        ({"model": "m", "input": "x", "tool_choice": "required"}, "tool_choice", "invalid_value"),
        (
            {
                "model": "m",
                "input": "x",
                "tools": [{"type": "function", "name": "f"}],
                "tool_choice": {"type": "function", "name": "g"},
            },
            "tool_choice",
            "invalid_value",
        ),
        (
            {
                "model": "m",
                "input": "x",
                "tools": [{"type": "function", "name": "f"}],
                "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "g"}]},
            },
            "tool_choice.tools[0]",
            "invalid_value",
        ),
        (
            {
                "model": "m",
                "input": "x",
                "tools": [{"type": "function", "name": "f"}],
                "tool_choice": {"type": "file_search"},
            },
            "tool_choice.type",
            "unsupported_parameter",
        ),
        ({"model": "m", "input": "x", "reasoning": {"effort": "high"}}, "reasoning", "unsupported_parameter"),
        ({"model": "m", "input": "x", "prompt": {"id": "pmpt_1"}}, "prompt", "unsupported_parameter"),
        ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation", "unsupported_parameter"),
        ({"model": "m", "input": "x", "background": True, "stream": True}, "background", "unsupported_parameter"),
        ({"model": "m", "input": "x", "background": True, "store": False}, "background", "invalid_value"),
        (
            {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}},
            "text.format.name",
            "missing_required_parameter",
        ),
        (
            {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "a"}}},
            "text.format.schema",
            "missing_required_parameter",
        ),
        (
            {"model": "m", "input": "x", "stream_options": {"include_obfuscation": False}},
            "stream_options",
            "invalid_value",
        ),
        ({"model": "m", "input": "x", "metadata": {"k": "v" * 513}}, "metadata.k", "string_above_max_length"),
    ],
)
def test_faults_are_openai_400s(body: dict[str, Any], param: str, code: str) -> None:
    assert refused(body) == (param, code)


def test_empty_reasoning_is_accepted() -> None:
    assert parse({"model": "m", "input": "x", "reasoning": {}}).reasoning is not None


def test_input_is_bounded_before_parsing() -> None:
    limits = LimitsConfig(max_messages=2, max_message_chars=10, max_total_chars=15)
    assert refused({"model": "m", "input": [{"role": "user", "content": "a"}] * 3}, limits) == (
        "input", "array_above_max_length")  # fmt: skip
    assert refused({"model": "m", "input": "x" * 11}, limits) == ("input", "string_above_max_length")
    assert refused({"model": "m", "instructions": "y" * 9, "input": "x" * 9}, limits) == (
        "input", "string_above_max_length")  # fmt: skip
