"""Chat templates: the model's own Jinja template, rendered in a sandbox."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from chatgate.backends.local.prompt import ControlTokens, RenderedPrompt, Shield
from chatgate.backends.local.toolcalls import render_call, tools_preamble
from chatgate.errors import InvalidRequestError
from chatgate.protocol import ChatMessage

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""The explicit fallback format for a model whose GGUF carries no template (``chat_template: chatml``)."""

BUILTIN_TEMPLATES = {"chatml": CHATML}


class TemplateRaised(Exception):
    """A template called ``raise_exception``: the conversation is not one the model accepts."""


def _raise_exception(message: str) -> None:
    raise TemplateRaised(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


class ChatTemplate:
    """A compiled chat template with the special tokens it refers to.

    ``control`` are the vocabulary's control-token texts: request strings are shielded from them
    (see :mod:`chatgate.backends.local.prompt`) so that only the template's markup writes them."""

    def __init__(self, source: str, *, bos_token: str, eos_token: str, control: ControlTokens | None = None) -> None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        self.source = source
        self.takes_tools = "tools" in source
        """The template presents tools itself; otherwise chatgate's generic form is used."""
        self._template = env.from_string(source)
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.control = control or ControlTokens({})

    def render(self, messages: list[ChatMessage], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt text for ``messages`` (offering ``tools``), with the assistant's turn opened."""
        return self.render_prompt(messages, tools).text

    def render_prompt(self, messages: list[ChatMessage], tools: list[dict[str, Any]] | None = None) -> RenderedPrompt:
        """:meth:`render`, saying where request text holds control-token text (to be kept as text)."""
        if self.takes_tools:
            converted = [_to_template_dict(m) for m in messages]
        else:
            converted = _generic(messages, tools)
            tools = None
        shield = Shield(self.control)
        try:
            rendered = self._template.render(
                messages=shield.value(converted),
                add_generation_prompt=True,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                tools=shield.value(tools) if tools else None,
            )
        except TemplateRaised as exc:
            raise InvalidRequestError(
                f"This model's chat template rejected the conversation: {exc}",
                param="messages",
                code="invalid_value",
            ) from None
        except TemplateError as exc:
            raise InvalidRequestError(
                f"This model's chat template could not render the conversation: {exc}",
                param="messages",
                code="invalid_value",
            ) from None
        return shield.restore(rendered)


def _generic(messages: list[ChatMessage], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Tools, tool calls and tool results written into plain messages (see ``toolcalls``)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        entry = _to_template_dict(message)
        entry.pop("tool_calls", None)
        entry.pop("tool_call_id", None)
        if message.role == "assistant" and (message.tool_calls or message.function_call):
            calls = [render_call(*_call_parts(c)) for c in message.tool_calls or []]
            if message.function_call:
                calls.append(render_call(*_call_parts({"function": message.function_call})))
            entry["content"] = "\n".join([entry["content"], *calls] if entry["content"] else calls)
        elif message.role in ("tool", "function"):
            entry = {"role": "user", "content": f"<tool_response>\n{entry['content']}\n</tool_response>"}
        out.append(entry)
    if tools:
        preamble = tools_preamble(tools)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{preamble}"}
        else:
            out.insert(0, {"role": "system", "content": preamble})
    return out


def _call_parts(call: dict[str, Any]) -> tuple[str, str]:
    function = call.get("function") or {}
    return str(function.get("name", "")), str(function.get("arguments", "{}"))


def _to_template_dict(message: ChatMessage) -> dict[str, Any]:
    """The shape HF-style templates expect: string content, ``developer`` read as ``system``."""
    role = "system" if message.role == "developer" else message.role
    out: dict[str, Any] = {"role": role, "content": message.text()}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = message.tool_calls
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out
