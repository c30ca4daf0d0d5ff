"""Legacy text completions on an OpenAI-compatible upstream (vLLM, llama-server, Ollama, OpenAI's
``*-instruct`` models…): a :class:`RawPromptRequest` is sent to the server's ``/completions`` in OpenAI's
legacy shape, and the answer is read back into chat's protocol models, so that the layers above handle
it as any chat answer. A server without ``/completions`` answers its own error (a 404 mostly)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from chatgate.backends.upstream_errors import OPENAI, malformed, map_event_error
from chatgate.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    TokenLogprob,
    TopLogprob,
)
from chatgate.protocol.text_completions import Completion, CompletionLogprobs, RawPromptRequest

CHAT_ONLY = frozenset({"messages", "logprobs", "top_logprobs", "prompt"})
"""Fields of a RawPromptRequest that are not sent as they are (the legacy ``logprobs`` is an integer)."""


def text_body(req: RawPromptRequest, model: str, exclude: set[str], *, stream: bool) -> dict[str, Any]:
    """The legacy request body for ``req``."""
    body = req.model_dump(mode="json", exclude_none=True, exclude=exclude | CHAT_ONLY)
    body["model"] = model
    body["prompt"] = req.prompt
    if req.logprobs:
        body["logprobs"] = req.top_logprobs or 0
    body["stream"] = stream
    if not stream:
        body.pop("stream_options", None)
    return body


def chat_logprobs(lp: CompletionLogprobs | None) -> ChoiceLogprobs | None:
    if lp is None:
        return None
    content = [
        TokenLogprob(token=token, logprob=logprob if logprob is not None else 0.0, bytes=None,
                     top_logprobs=[TopLogprob(token=t, logprob=v, bytes=None) for t, v in (top or {}).items()])
        for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=False)
    ]  # fmt: skip
    return ChoiceLogprobs(content=content)


def text_completion(raw: bytes, provider: str) -> ChatCompletion:
    """An upstream's text completion as a chat completion."""
    try:
        answer = Completion.model_validate_json(raw)
    except ValidationError:
        raise malformed(provider) from None
    choices = [
        Choice(index=c.index, message=AssistantMessage(content=c.text), logprobs=chat_logprobs(c.logprobs),
               finish_reason=c.finish_reason or "stop")
        for c in answer.choices
    ]  # fmt: skip
    return ChatCompletion(id=answer.id, created=answer.created, model=answer.model, choices=choices,
                          usage=answer.usage, system_fingerprint=answer.system_fingerprint)  # fmt: skip


def text_chunk(data: str, provider: str, api_key: str | None) -> ChatCompletionChunk:
    """One event of an upstream's streamed text completion as a chat chunk (an ``{"error": …}`` event
    raises, with ``api_key`` masked in it)."""
    try:
        event = json.loads(data)
    except ValueError:
        raise malformed(provider) from None
    if isinstance(event, dict) and "error" in event:
        raise map_event_error(event, provider, api_key, dialect=OPENAI)
    try:
        answer = Completion.model_validate(event)
    except ValidationError:
        raise malformed(provider) from None
    choices = [
        ChunkChoice(index=c.index, delta=Delta(content=c.text), logprobs=chat_logprobs(c.logprobs),
                    finish_reason=c.finish_reason)
        for c in answer.choices
    ]  # fmt: skip
    return ChatCompletionChunk(id=answer.id, created=answer.created, model=answer.model, choices=choices,
                               usage=answer.usage, system_fingerprint=answer.system_fingerprint,
                               with_usage_field=answer.usage is not None)  # fmt: skip
