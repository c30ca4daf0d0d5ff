"""Chat templates: the model's own Jinja template, rendered in a sandbox."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

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
    """A compiled chat template with the special tokens it refers to."""

    def __init__(self, source: str, *, bos_token: str, eos_token: str) -> None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        self.source = source
        self._template = env.from_string(source)
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: list[ChatMessage]) -> str:
        """The prompt text for ``messages``, ending with the assistant's turn opened."""
        try:
            return self._template.render(
                messages=[_to_template_dict(m) for m in messages],
                add_generation_prompt=True,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                tools=None,
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
