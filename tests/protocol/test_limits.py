"""Request-size checks that run before parsing: JSON depth without recursion, counts and sizes."""

from __future__ import annotations

import json

import pytest

from chatgate.config import LimitsConfig
from chatgate.errors import InvalidRequestError
from chatgate.protocol.limits import check_chat, check_depth, check_metadata, json_depth


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"1", 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": [[]]}]}', 5),
        (b'{"a": "[[[[[[[[", "b": "\\"[[[[{{{"}', 1),  # brackets inside strings, escaped quotes
        (b"[" * 100_000 + b"]" * 100_000, 100_000),
        (b'[{"x": "]]]]"}, [[["}"]]]]', 4),
    ],
)
def test_json_depth_counts_structure_only(body: bytes, depth: int) -> None:
    assert json_depth(body) == depth
    if depth < 1000:
        parsed = json.loads(body)
        assert parsed is not None or body == b"null"


def test_depth_beyond_the_limit_is_a_400_without_parsing() -> None:
    limits = LimitsConfig(max_json_depth=10)
    check_depth(b"[" * 10 + b"]" * 10, limits)
    with pytest.raises(InvalidRequestError) as err:
        check_depth(b"[" * 11 + b"]" * 11, limits)
    assert err.value.code == "json_too_deep" and err.value.param is None
    check_depth(b'["' + b"[" * 50 + b'"]', limits)  # in a string: not nesting


def test_counts_and_sizes_name_the_param() -> None:
    limits = LimitsConfig(max_messages=3, max_message_chars=10, max_total_chars=15, max_string_chars=12)
    message = {"role": "user", "content": "a"}
    with pytest.raises(InvalidRequestError) as err:
        check_chat({"messages": [message] * 4}, limits)
    assert (err.value.param, err.value.code) == ("messages", "array_above_max_length")
    with pytest.raises(InvalidRequestError) as err:
        check_chat({"messages": [{"role": "user", "content": [{"type": "text", "text": "a" * 11}]}]}, limits)
    assert (err.value.param, err.value.code) == ("messages[0]", "string_above_max_length")
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 1000}}
    check_chat({"messages": [{"role": "user", "content": [image]}]}, limits)  # media: bounded by the body size
    with pytest.raises(InvalidRequestError) as err:
        check_chat({"messages": [{"role": "user", "content": "a" * 8}] * 2}, limits)
    assert err.value.param == "messages"
    with pytest.raises(InvalidRequestError) as err:
        check_chat({"messages": [message], "tools": [{"function": {"description": "a long description"}}]}, limits)
    assert err.value.param == "tools[0].function.description"


def test_metadata_bounds() -> None:
    limits = LimitsConfig()
    check_metadata({f"k{i}": "v" * 512 for i in range(16)}, limits)
    for bad in ({f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}, {"k": list(range(200))}):
        with pytest.raises(InvalidRequestError):
            check_metadata(bad, limits)
