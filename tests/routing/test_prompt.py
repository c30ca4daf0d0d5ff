"""The upstream prompt bound: the body's bytes plus the documented overheads, per message, per tool and
per attachment; a deployment's own overheads win over the server's."""

from __future__ import annotations

import json
from typing import Any

from chatgate.config import PromptOverheadConfig
from chatgate.protocol import ChatCompletionRequest
from chatgate.routing.prompt import attachments, upstream_prompt_bound

OVERHEAD = PromptOverheadConfig(per_request=10, per_message=3, tools=500, per_tool=20, per_attachment=1000)
TOOL = {"type": "function", "function": {"name": "f"}}
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}


def sized(body: dict[str, Any]) -> tuple[ChatCompletionRequest, int]:
    raw = json.dumps(body).encode()
    return ChatCompletionRequest.model_validate_json(raw), len(raw)


def test_a_plain_request_is_its_bytes_plus_per_request_and_per_message() -> None:
    req, size = sized({"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": "Hi"}]})  # fmt: skip
    assert upstream_prompt_bound(req, size, OVERHEAD) == size + 10 + 2 * 3


def test_tools_and_functions_add_the_preamble_once_and_their_framing_each() -> None:
    req, size = sized({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "tools": [TOOL, TOOL]})
    assert upstream_prompt_bound(req, size, OVERHEAD) == size + 10 + 3 + 500 + 2 * 20
    legacy, size = sized({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "functions": [{"name": "g"}]})
    assert upstream_prompt_bound(legacy, size, OVERHEAD) == size + 10 + 3 + 500 + 20


def test_each_image_audio_or_file_part_adds_its_allowance() -> None:
    parts = [{"type": "text", "text": "What is this?"}, IMAGE, IMAGE,
             {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]  # fmt: skip
    req, size = sized({"model": "m", "messages": [{"role": "user", "content": parts}]})
    assert attachments(req) == 3
    assert upstream_prompt_bound(req, size, OVERHEAD) == size + 10 + 3 + 3 * 1000
