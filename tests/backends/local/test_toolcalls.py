"""Reading tool calls back from generated text, whole and piece by piece."""

from __future__ import annotations

import json

from chatgate.backends.local.toolcalls import ToolCallParser, parse_all, render_call, tools_preamble

TWO_CALLS = (
    '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": {"s": "} \\" {"}} }\n</tool_call>\n'
    '<tool_call>\n{"name": "noop", "arguments": {}}\n</tool_call>'
)


def test_whole_text_gives_every_call_with_exact_arguments() -> None:
    parser = parse_all(TWO_CALLS)
    assert parser.tool_mode
    assert [c["name"] for c in parser.calls] == ["add", "noop"]
    assert json.loads(parser.calls[0]["arguments"]) == {"a": 1, "b": {"s": '} " {'}}
    assert parser.calls[1]["arguments"] == "{}"
    assert all(c["id"].startswith("call_") for c in parser.calls)


def test_piece_by_piece_gives_the_same_calls_and_openai_shaped_events() -> None:
    parser = ToolCallParser()
    events = []
    for ch in TWO_CALLS:
        content, new = parser.feed(ch)
        assert content == ""
        events += new
    starts = [e for e in events if e.name is not None]
    assert [(e.index, e.name, e.arguments) for e in starts] == [(0, "add", ""), (1, "noop", "")]
    for index, call in enumerate(parser.calls):
        assert "".join(e.arguments for e in events if e.index == index) == call["arguments"]
    assert [c["arguments"] for c in parser.calls] == [c["arguments"] for c in parse_all(TWO_CALLS).calls]


def test_text_not_starting_with_a_tag_is_content() -> None:
    parser = ToolCallParser()
    assert parser.feed("Hello") == ("Hello", [])
    assert parser.feed(" <tool_call>") == (" <tool_call>", [])
    assert not parser.calls and parser.content == "Hello <tool_call>"


def test_history_renders_calls_the_way_the_model_is_taught() -> None:
    text = render_call("add", '{"a": 1}')
    assert parse_all(text).calls[0]["name"] == "add"
    preamble = tools_preamble([{"type": "function", "function": {"name": "add"}}])
    assert "<tools>" in preamble and '"name": "add"' in preamble
