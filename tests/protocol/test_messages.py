"""Anthropic's Messages API request models: what they take and what they refuse."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from chatgate.protocol.messages import CountTokensRequest, MessagesRequest, ThinkingBlock, ToolUseBlock

HI: list[Any] = [{"role": "user", "content": "hi"}]


def test_blocks_are_told_apart_by_their_type() -> None:
    blocks = [
        {"type": "thinking", "thinking": "…", "signature": "s"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}},
    ]
    req = MessagesRequest.model_validate(
        {"model": "m", "max_tokens": 1, "messages": [{"role": "assistant", "content": blocks}]}
    )
    content = req.messages[0].content
    assert isinstance(content, list)
    assert isinstance(content[0], ThinkingBlock) and isinstance(content[1], ToolUseBlock)


@pytest.mark.parametrize(
    "fields",
    [
        {"messages": HI},  # no max_tokens
        {"max_tokens": 1, "messages": HI, "temperature": 1.5},
        {"max_tokens": 1, "messages": HI, "temperature": "0.5"},
        {"max_tokens": 1, "messages": [{"role": "system", "content": "x"}]},
        {"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
        {"max_tokens": 1, "messages": HI, "tools": [{"name": "search", "type": "web_search_20250305"}]},
        {"max_tokens": 1, "messages": HI, "tool_choice": {"type": "sometimes"}},
    ],
)
def test_what_anthropic_refuses_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MessagesRequest.model_validate({"model": "m", **fields})


def test_count_tokens_needs_no_max_tokens() -> None:
    assert CountTokensRequest.model_validate({"model": "m", "messages": HI}).model == "m"
