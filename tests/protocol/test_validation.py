"""Each validation rule: bad input gets OpenAI's 400 with the right type, param and code."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatgate.errors import InvalidJSONError, InvalidRequestError
from chatgate.protocol.validation import param_path, parse_chat_request

USER = [{"role": "user", "content": "Hi"}]


def parse(body: dict[str, Any]) -> None:
    parse_chat_request(json.dumps(body).encode())


def rejected(body: dict[str, Any]) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as err:
        parse(body)
    assert err.value.status == 400
    assert err.value.type == "invalid_request_error"
    return err.value


def test_a_valid_request_parses_with_every_field() -> None:
    body = {
        "model": "gpt-4",
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "developer", "content": "d"},
            {"role": "user", "content": [{"type": "text", "text": "u"}]},
            {"role": "assistant", "content": "a"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "content": "t", "tool_call_id": "c"},
            {"role": "function", "content": "f", "name": "f"},
        ],
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 10,
        "max_completion_tokens": 5,
        "n": 2,
        "stop": ["a", "b"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "frequency_penalty": -1,
        "presence_penalty": 1.5,
        "logit_bias": {"12": -100, "7": 5},
        "seed": 42,
        "logprobs": True,
        "top_logprobs": 3,
        "user": "u1",
        "metadata": {"k": "v"},
        "store": False,
        "service_tier": "auto",
        "top_k": 40,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "some_future_field": {"ignored": True},
    }
    req = parse_chat_request(json.dumps(body).encode())
    assert req.completion_limit() == 5
    assert req.stop_sequences() == ["a", "b"]
    assert req.wants_usage_chunk()


def test_bad_json_is_a_400_with_openai_wording() -> None:
    with pytest.raises(InvalidJSONError) as err:
        parse_chat_request(b'{"model": "gpt-4", "messages": [')
    assert err.value.status == 400 and err.value.param is None
    assert "could not parse the JSON body" in err.value.message


def test_a_body_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(InvalidRequestError) as err:
        parse_chat_request(b"[1, 2]")
    assert err.value.code == "invalid_type"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": USER}, "model", "missing_required_parameter"),
        ({"model": "m"}, "messages", "missing_required_parameter"),
        ({"model": "m", "messages": []}, "messages", "empty_array"),
        ({"model": 5, "messages": USER}, "model", "invalid_type"),
        ({"model": "m", "messages": "hi"}, "messages", "invalid_type"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"model": "m", "messages": [{"content": "x"}]}, "messages[0].role", "missing_required_parameter"),
        ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content", "missing_required_parameter"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
        (
            {"model": "m", "messages": [*USER, {"role": "user", "content": [{"type": "text"}]}]},
            "messages[1].content[0].text",
            "missing_required_parameter",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "video", "text": "x"}]}]},
            "messages[0].content[0].type",
            "invalid_value",
        ),
        (
            {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
            "missing_required_parameter",
        ),
        (
            {"model": "m", "messages": [{"role": "function", "content": "x"}]},
            "messages[0].name",
            "missing_required_parameter",
        ),
        ({"model": "m", "messages": [{"role": "assistant"}]}, "messages[0].content", "missing_required_parameter"),
        ({"model": "m", "messages": USER, "temperature": "0.7"}, "temperature", "invalid_type"),
        ({"model": "m", "messages": USER, "temperature": 2.5}, "temperature", "decimal_above_max_value"),
        ({"model": "m", "messages": USER, "temperature": -1}, "temperature", "decimal_below_min_value"),
        ({"model": "m", "messages": USER, "top_p": 1.5}, "top_p", "decimal_above_max_value"),
        ({"model": "m", "messages": USER, "frequency_penalty": 3}, "frequency_penalty", "decimal_above_max_value"),
        ({"model": "m", "messages": USER, "presence_penalty": -3}, "presence_penalty", "decimal_below_min_value"),
        ({"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens", "integer_below_min_value"),
        ({"model": "m", "messages": USER, "max_tokens": 1.5}, "max_tokens", "invalid_type"),
        (
            {"model": "m", "messages": USER, "max_completion_tokens": -1},
            "max_completion_tokens",
            "integer_below_min_value",
        ),
        ({"model": "m", "messages": USER, "n": 0}, "n", "integer_below_min_value"),
        ({"model": "m", "messages": USER, "n": 129}, "n", "integer_above_max_value"),
        ({"model": "m", "messages": USER, "n": True}, "n", "invalid_type"),
        ({"model": "m", "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
        ({"model": "m", "messages": USER, "stop": 5}, "stop", "invalid_type"),
        ({"model": "m", "messages": USER, "stream": "yes"}, "stream", "invalid_type"),
        ({"model": "m", "messages": USER, "logprobs": 1}, "logprobs", "invalid_type"),
        (
            {"model": "m", "messages": USER, "logprobs": True, "top_logprobs": 21},
            "top_logprobs",
            "integer_above_max_value",
        ),
        ({"model": "m", "messages": USER, "top_logprobs": 2}, "top_logprobs", "invalid_value"),
        ({"model": "m", "messages": USER, "logit_bias": {"5": 101}}, "logit_bias.5", "decimal_above_max_value"),
        ({"model": "m", "messages": USER, "logit_bias": {"abc": 1}}, "logit_bias", "invalid_value"),
        ({"model": "m", "messages": USER, "seed": "1"}, "seed", "invalid_type"),
        (
            {"model": "m", "messages": USER, "stream_options": {"include_usage": True}},
            "stream_options",
            "invalid_value",
        ),
        ({"model": "m", "messages": USER, "response_format": {"type": "xml"}}, "response_format.type", "invalid_value"),
        ({"model": "m", "messages": USER, "top_k": -1}, "top_k", "integer_below_min_value"),
        ({"model": "m", "messages": USER, "min_p": 2}, "min_p", "decimal_above_max_value"),
        ({"model": "m", "messages": USER, "repetition_penalty": 0}, "repetition_penalty", "decimal_below_min_value"),
    ],
)
def test_bad_input_names_the_param_and_code(body: dict[str, Any], param: str, code: str) -> None:
    err = rejected(body)
    assert (err.param, err.code) == (param, code), err.message
    assert param in err.message


def test_messages_are_named_in_openai_notation() -> None:
    assert param_path(("messages", 3, "content", "list[ContentPart]", 0, "text")) == "messages[3].content[0].text"


def test_range_errors_say_what_was_expected_and_what_came() -> None:
    err = rejected({"model": "m", "messages": USER, "temperature": 3})
    assert err.message == (
        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 instead."
    )


def test_type_errors_say_what_was_expected_and_what_came() -> None:
    err = rejected({"model": "m", "messages": USER, "temperature": "hot"})
    assert err.message == "Invalid type for 'temperature': expected a decimal, but got a string instead."
