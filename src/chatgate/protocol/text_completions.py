"""OpenAI's legacy text completions (``POST /v1/completions``) as pydantic models, and the request the
layers below the server see for one: :class:`RawPromptRequest`.

Fields follow the order of OpenAI's API reference (https://platform.openai.com/docs/api-reference/completions);
chatgate's sampling extensions (``top_k``, ``min_p``, ``repetition_penalty``) are fenced at the end, as
in :class:`~chatgate.protocol.requests.ChatCompletionRequest`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from chatgate.protocol.requests import ChatCompletionRequest, Penalty, Probability, StreamOptions
from chatgate.protocol.responses import ChoiceLogprobs, Usage

TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(BaseModel):
    """The body of ``POST /v1/completions``."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    model: str
    prompt: str | Annotated[list[str], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    best_of: Annotated[int, Field(ge=1, le=20)] | None = None
    echo: bool | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] = 16
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    presence_penalty: Penalty | None = None
    seed: int | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Probability | None = None
    user: str | None = None

    # --- chatgate extensions, as for chat -------------------------------------------------------
    top_k: Annotated[int, Field(ge=0)] | None = None
    min_p: Probability | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=10)] | None = None


class RawPromptRequest(ChatCompletionRequest):
    """A completion of ``prompt`` as it is, without the chat template: what ``/v1/completions`` asks of
    the Gateway. ``messages`` holds the prompt's text as one user message (for whatever bounds a request
    by its messages); a backend that serves raw prompts completes ``prompt`` instead, and the route sends
    such a request only to models whose every deployment does (see ``ServesRawPrompts``)."""

    prompt: str | TokenIds


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy logprobs: parallel arrays, one entry per token."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length", "content_filter"] | None = None


class Completion(BaseModel):
    """A text completion, or (``stream``) one chunk of one."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: Usage | None = None

    def chunk_json(self, include_usage: bool) -> str:
        """As a stream event's data: ``usage`` only when the request asked for the usage chunk."""
        return self.model_dump_json(exclude=None if include_usage else {"usage"})


def legacy_logprobs(logprobs: ChoiceLogprobs | None, offset: int) -> CompletionLogprobs | None:
    """Chat's per-token logprobs in the legacy shape; ``offset``: where the first token's text starts."""
    if logprobs is None or logprobs.content is None:
        return None
    out = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    for token in logprobs.content:
        out.tokens.append(token.token)
        out.token_logprobs.append(token.logprob)
        out.top_logprobs.append({t.token: t.logprob for t in token.top_logprobs})
        out.text_offset.append(offset)
        offset += len(token.token)
    return out


__all__ = [
    "Completion",
    "CompletionChoice",
    "CompletionLogprobs",
    "CompletionRequest",
    "RawPromptRequest",
    "legacy_logprobs",
]
