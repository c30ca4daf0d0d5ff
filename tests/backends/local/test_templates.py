"""Chat templates render in a sandbox, map roles the way templates expect, and fail cleanly."""

from __future__ import annotations

import pytest

from chatgate.backends.local.templates import CHATML, ChatTemplate
from chatgate.errors import InvalidRequestError
from chatgate.protocol import ChatMessage


def msg(role: str, content: object) -> ChatMessage:
    return ChatMessage.model_validate({"role": role, "content": content})


def test_chatml_renders_the_conversation_and_opens_the_assistant_turn() -> None:
    t = ChatTemplate(CHATML, bos_token="", eos_token="")
    out = t.render([msg("system", "Be brief."), msg("user", "Hi")])
    assert out == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_developer_is_rendered_as_system_and_text_parts_are_joined() -> None:
    t = ChatTemplate(CHATML, bos_token="", eos_token="")
    parts = [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]
    assert t.render([msg("developer", parts)]) == t.render([msg("system", "Be brief.")])


def test_raise_exception_in_a_template_is_a_400() -> None:
    source = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}"
    with pytest.raises(InvalidRequestError) as err:
        ChatTemplate(source, bos_token="", eos_token="").render([msg("system", "x")])
    assert "first must be user" in err.value.message
    assert err.value.param == "messages"


def test_templates_cannot_escape_the_sandbox() -> None:
    source = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(InvalidRequestError):
        ChatTemplate(source, bos_token="", eos_token="").render([msg("user", "x")])


def test_templates_see_bos_and_eos_tokens() -> None:
    t = ChatTemplate("{{ bos_token }}{{ messages[0]['content'] }}{{ eos_token }}", bos_token="<s>", eos_token="</s>")
    assert t.render([msg("user", "x")]) == "<s>x</s>"
