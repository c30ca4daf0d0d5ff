"""Between a completion and its stream: chunks folded into the completion they spell (to store or
cache a streamed answer), and a completion unfolded into chunks (to stream an answer from the cache)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from chatgate.protocol.responses import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FinishReason,
    FunctionCall,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    Usage,
)


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


@dataclass
class _Calls:
    ids: dict[int, str] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    arguments: dict[int, str] = field(default_factory=dict)


@dataclass
class _Choice:
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    calls: _Calls = field(default_factory=_Calls)
    function: dict[str, str] | None = None
    finish: FinishReason | None = None


class Assembler:
    """Feed it every chunk of a stream; :meth:`completion` is the whole answer once each choice finished."""

    def __init__(self) -> None:
        self._choices: dict[int, _Choice] = {}
        self._head: ChatCompletionChunk | None = None
        self.usage: Usage | None = None

    def add(self, chunk: ChatCompletionChunk) -> None:
        self._head = self._head or chunk
        if chunk.usage is not None:
            self.usage = chunk.usage
        for c in chunk.choices:
            state = self._choices.setdefault(c.index, _Choice())
            d = c.delta
            if d.content:
                state.content.append(d.content)
            if d.refusal:
                state.refusal.append(d.refusal)
            if c.logprobs is not None and c.logprobs.content is not None:
                if state.logprobs is None:
                    state.logprobs = []
                state.logprobs.extend(c.logprobs.content)
            for call in d.tool_calls or []:
                _add_call(state.calls, call)
            if d.function_call:
                state.function = state.function or {"name": "", "arguments": ""}
                for k in ("name", "arguments"):
                    state.function[k] += d.function_call.get(k, "")
            if c.finish_reason is not None:
                state.finish = c.finish_reason

    @property
    def finished(self) -> bool:
        return bool(self._choices) and all(c.finish is not None for c in self._choices.values())

    def completion(self) -> ChatCompletion | None:
        if self._head is None or not self.finished:
            return None
        choices = [_choice(i, self._choices[i]) for i in sorted(self._choices)]
        head = self._head
        return ChatCompletion(id=head.id, created=head.created, model=head.model, choices=choices, usage=self.usage,
                              system_fingerprint=head.system_fingerprint)  # fmt: skip


def _add_call(calls: _Calls, delta: ToolCallDelta) -> None:
    if delta.id:
        calls.ids[delta.index] = delta.id
    fn = delta.function or {}
    if "name" in fn:
        calls.names[delta.index] = calls.names.get(delta.index, "") + fn["name"]
    calls.arguments[delta.index] = calls.arguments.get(delta.index, "") + fn.get("arguments", "")


def _choice(index: int, state: _Choice) -> Choice:
    calls = [ToolCall(id=state.calls.ids.get(i, f"call_{i}"), function=FunctionCall(name=state.calls.names.get(i, ""),
                      arguments=state.calls.arguments.get(i, ""))) for i in sorted(state.calls.names)]  # fmt: skip
    message = AssistantMessage(
        content="".join(state.content) if state.content or not (calls or state.function) else None,
        refusal="".join(state.refusal) or None,
        tool_calls=calls or None,
        function_call=FunctionCall(**state.function) if state.function else None,
    )
    logprobs = ChoiceLogprobs(content=state.logprobs) if state.logprobs is not None else None
    assert state.finish is not None
    return Choice(index=index, message=message, logprobs=logprobs, finish_reason=state.finish)


def as_chunks(completion: ChatCompletion, *, include_usage: bool) -> Iterator[ChatCompletionChunk]:
    """The stream of ``completion``: per choice a role chunk, its content (one chunk, with its logprobs),
    its tool calls, its finish; then the usage chunk when asked for."""

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=completion.id, created=completion.created, model=completion.model,
                                   system_fingerprint=completion.system_fingerprint, choices=choices, usage=usage,
                                   with_usage_field=include_usage)  # fmt: skip

    for choice in completion.choices:
        m, i = choice.message, choice.index
        calls = m.tool_calls is not None or m.function_call is not None
        yield chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content=None if calls else ""))])
        if m.content:
            yield chunk([ChunkChoice(index=i, delta=Delta(content=m.content), logprobs=choice.logprobs)])
        if m.refusal:
            yield chunk([ChunkChoice(index=i, delta=Delta(refusal=m.refusal))])
        for n, call in enumerate(m.tool_calls or []):
            fn = {"name": call.function.name, "arguments": call.function.arguments}
            delta = ToolCallDelta(index=n, id=call.id, type="function", function=fn)
            yield chunk([ChunkChoice(index=i, delta=Delta(tool_calls=[delta]))])
        if m.function_call is not None:
            fn = {"name": m.function_call.name, "arguments": m.function_call.arguments}
            yield chunk([ChunkChoice(index=i, delta=Delta(function_call=fn))])
        yield chunk([ChunkChoice(index=i, delta=Delta(), finish_reason=choice.finish_reason)])
    if include_usage and completion.usage is not None:
        yield chunk([], completion.usage)


def fresh(completion: ChatCompletion) -> ChatCompletion:
    """A copy of ``completion`` as a new answer: new id, created now."""
    return completion.model_copy(update={"id": new_id(), "created": int(time.time())})
