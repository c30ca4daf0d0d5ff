"""Upper bounds of the prompt tokens a request will be charged on a deployment: the budget's worst case.

A local model counts exactly what it will prompt (see ``LocalBackend.prompt_bound``). An upstream
deployment cannot be asked, so its bound is documented arithmetic: a token is at least one byte of the
text it encodes, so the request body's bytes bound the tokens of every message, tool schema and
argument it carries (JSON escapes only make the body longer than the text); on top of those come the
provider's own tokens, which the body does not carry, from :class:`~chatgate.config.PromptOverheadConfig`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from chatgate.config import PromptOverheadConfig
from chatgate.protocol import ChatCompletionRequest

ATTACHMENTS = ("image_url", "input_audio", "file")


@runtime_checkable
class CountsPrompt(Protocol):
    """A backend that knows the most prompt tokens a request costs on it (the local engine)."""

    def prompt_bound(self, req: ChatCompletionRequest) -> int: ...


def upstream_prompt_bound(req: ChatCompletionRequest, body_bytes: int, overhead: PromptOverheadConfig) -> int:
    """The most prompt tokens an upstream deployment may charge for ``req``, whose body had ``body_bytes``."""
    bound = body_bytes + overhead.per_request + overhead.per_message * len(req.messages)
    offered = len(req.tools or []) + len(req.functions or [])
    if offered:
        bound += overhead.tools + overhead.per_tool * offered
    return bound + overhead.per_attachment * attachments(req)


def attachments(req: ChatCompletionRequest) -> int:
    """Content parts whose tokens their bytes do not bound: images, audio, files."""
    return sum(1 for m in req.messages if isinstance(m.content, list) for p in m.content if p.type in ATTACHMENTS)
