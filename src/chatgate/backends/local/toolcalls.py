"""Tool calls in the model's text: how tools are presented in the prompt, and how the generated
``<tool_call>`` blocks are read back, whole or incrementally while streaming.

The generic form (for templates that do not take ``tools`` themselves) is the widespread
Hermes/Qwen convention::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

The grammar guarantees the shape, so reading it back never has to guess.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from chatgate.backends.local.grammar import TOOL_OPEN

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)
_CALL_HEAD = TOOL_OPEN + '{"name": "'
_ARGS_HEAD = '", "arguments": '


def tools_preamble(tools: list[dict[str, Any]]) -> str:
    return TOOLS_PREAMBLE.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))


def render_call(name: str, arguments: str) -> str:
    """An earlier assistant tool call, as the model is taught to write it."""
    try:
        args: Any = json.loads(arguments)
    except ValueError:
        args = arguments
    return f"{TOOL_OPEN}{json.dumps({'name': name, 'arguments': args}, ensure_ascii=False)}\n</tool_call>"


def new_call_id() -> str:
    return "call_" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


@dataclass
class CallEvent:
    """What the parser learned from new text: a call began, or more of its arguments arrived."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class ToolCallParser:
    """Reads ``<tool_call>`` blocks from text fed in pieces; anything else is plain content.

    The first character decides: ``<`` starts tool calls (the grammar forbids content starting
    with it), anything else is content.
    """

    tool_mode: bool | None = None
    calls: list[dict[str, str]] = field(default_factory=list)
    content: str = ""
    _buffer: str = ""
    _state: str = "head"
    _depth: int = 0
    _in_string: bool = False
    _escaped: bool = False

    def feed(self, text: str) -> tuple[str, list[CallEvent]]:
        """Consume ``text``; return new content and call events."""
        if self.tool_mode is None and text:
            self.tool_mode = text[0] == "<"
        if not self.tool_mode:
            self.content += text
            return text, []
        self._buffer += text
        events: list[CallEvent] = []
        while self._step(events):
            pass
        return "", events

    def _step(self, events: list[CallEvent]) -> bool:
        buf = self._buffer
        if self._state == "head":
            start = buf.find(_CALL_HEAD)
            end = buf.find(_ARGS_HEAD, start + len(_CALL_HEAD)) if start >= 0 else -1
            if end < 0:
                return False
            name = buf[start + len(_CALL_HEAD) : end]
            call = {"id": new_call_id(), "name": name, "arguments": ""}
            self.calls.append(call)
            events.append(CallEvent(index=len(self.calls) - 1, id=call["id"], name=name))
            self._buffer = buf[end + len(_ARGS_HEAD) :]
            self._state, self._depth, self._in_string, self._escaped = "args", 0, False, False
            return True
        if self._state == "args":
            taken = self._scan_args(buf)
            piece = buf[:taken]
            if piece:
                self.calls[-1]["arguments"] += piece
                events.append(CallEvent(index=len(self.calls) - 1, arguments=piece))
            self._buffer = buf[taken:]
            if self._depth == 0 and self.calls[-1]["arguments"]:
                self._state = "head"
                return True
            return False
        return False

    def _scan_args(self, buf: str) -> int:
        """How much of ``buf`` belongs to the current arguments object."""
        for i, ch in enumerate(buf):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return i + 1
        return len(buf)


def parse_all(text: str) -> ToolCallParser:
    parser = ToolCallParser()
    parser.feed(text)
    return parser
