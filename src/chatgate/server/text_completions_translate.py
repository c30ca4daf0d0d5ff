"""Legacy text completions to and from chatgate's protocol, at the server's edge: a
:class:`CompletionRequest` becomes a :class:`RawPromptRequest` (the prompt completed as it is), and the
chat answer (or its chunks) becomes ``text_completion`` objects."""

from __future__ import annotations

from typing import Any, Literal

from chatgate.errors import InvalidRequestError, UnsupportedParameterError
from chatgate.protocol import ChatCompletion, ChatCompletionChunk, ChatMessage
from chatgate.protocol.text_completions import (
    Completion,
    CompletionChoice,
    CompletionRequest,
    RawPromptRequest,
    legacy_logprobs,
)

_SAME = ("model", "max_tokens", "n", "temperature", "top_p", "seed", "frequency_penalty", "presence_penalty",
         "logit_bias", "user", "stream", "stream_options", "top_k", "min_p", "repetition_penalty")  # fmt: skip


def one_prompt(prompt: str | list[str] | list[int] | list[list[int]]) -> str | list[int]:
    """The request's prompt: a string or a token array (an array of one of them: that one)."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return prompt
    if len(prompt) > 1:
        raise UnsupportedParameterError(
            "This server completes one prompt per request: send each prompt of the array in its own request.",
            param="prompt",
        )
    return prompt[0]  # type: ignore[return-value]


def raw_request(req: CompletionRequest) -> RawPromptRequest:
    """The request for the Gateway; 400 for what no backend here can do (``suffix``, ``best_of`` > ``n``,
    ``echo`` of a token prompt or with ``logprobs``)."""
    prompt = one_prompt(req.prompt)
    if req.suffix:
        raise UnsupportedParameterError("'suffix' (insertion) is not supported by the models served here.",
                                        param="suffix")  # fmt: skip
    if req.best_of is not None and req.best_of != (req.n or 1):
        raise UnsupportedParameterError("'best_of' other than 'n' is not supported: ask for 'n' completions.",
                                        param="best_of")  # fmt: skip
    if req.echo and (isinstance(prompt, list) or req.logprobs is not None):
        raise UnsupportedParameterError("'echo' works with a text prompt and without 'logprobs' here "
                                        "(the prompt's logprobs are not computed).", param="echo")  # fmt: skip
    if req.stream_options is not None and not req.stream:
        raise InvalidRequestError("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                                  param="stream_options", code="invalid_value")  # fmt: skip
    fields: dict[str, Any] = {name: getattr(req, name) for name in _SAME if getattr(req, name) is not None}
    if req.stop is not None:
        fields["stop"] = req.stop
    if req.logprobs is not None:
        fields.update(logprobs=True, top_logprobs=req.logprobs)
    text = prompt if isinstance(prompt, str) else ""
    return RawPromptRequest(messages=[ChatMessage(role="user", content=text)], prompt=prompt, **fields)


def finish(reason: str) -> Literal["stop", "length", "content_filter"]:
    return "length" if reason == "length" else "content_filter" if reason == "content_filter" else "stop"


def completion_id(chat_id: str) -> str:
    return "cmpl-" + chat_id.removeprefix("chatcmpl-")


def completion(chat: ChatCompletion, echo: str) -> Completion:
    """The chat answer as a text completion; ``echo``: the prompt, when it is to be echoed (else ``""``)."""
    choices = [
        CompletionChoice(
            text=echo + (c.message.content or ""),
            index=c.index,
            logprobs=legacy_logprobs(c.logprobs, len(echo)),
            finish_reason=finish(c.finish_reason),
        )
        for c in chat.choices
    ]
    return Completion(id=completion_id(chat.id), created=chat.created, model=chat.model,
                      system_fingerprint=chat.system_fingerprint, choices=choices, usage=chat.usage)  # fmt: skip


class Chunks:
    """Chat chunks as text completion chunks; each choice's text offsets counted across its chunks."""

    def __init__(self, echo: str) -> None:
        self.echo = echo
        self.offsets: dict[int, int] = {}

    def of(self, chunk: ChatCompletionChunk) -> Completion | None:
        """The chunk as a text completion chunk (None: it says nothing, as the role chunk)."""
        choices: list[CompletionChoice] = []
        for c in chunk.choices:
            text = c.delta.content or ""
            if c.index not in self.offsets:  # the choice's first chunk carries the echoed prompt
                self.offsets[c.index] = 0
                text = self.echo + text
            if not text and c.finish_reason is None and c.logprobs is None:
                continue
            offset = self.offsets[c.index]
            logprobs = legacy_logprobs(c.logprobs, offset + len(text) - len(c.delta.content or ""))
            self.offsets[c.index] = offset + len(text)
            reason = None if c.finish_reason is None else finish(c.finish_reason)
            choices.append(CompletionChoice(text=text, index=c.index, logprobs=logprobs, finish_reason=reason))
        if not choices and chunk.usage is None:
            return None
        return Completion(id=completion_id(chunk.id), created=chunk.created, model=chunk.model,
                          system_fingerprint=chunk.system_fingerprint, choices=choices, usage=chunk.usage)  # fmt: skip
