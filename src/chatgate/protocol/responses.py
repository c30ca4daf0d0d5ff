"""OpenAI's chat completion response, stream chunk, model and usage objects.

Field order follows OpenAI's API reference. Optional fields OpenAI omits when empty (``tool_calls``
on a message, the members of a stream ``delta``) are omitted here too; fields OpenAI sends as
``null`` (``content`` of a tool-call message, ``logprobs``) are sent as ``null``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class _Out(BaseModel):
    """A response object; ``_omit_if_none`` lists fields left out of the JSON when unset.

    Read it as the OpenAI SDK does (``r.choices[0].message.content``) or as a mapping of its JSON
    keys, as OneLLM's documentation does (``r.choices[0].message["content"]``,
    ``r.usage["total_tokens"]``, ``delta.get("content")``, ``{**message}``): a key the JSON leaves
    out is missing from the mapping, and nested objects are the same objects either way.
    """

    model_config = ConfigDict(extra="ignore")  # upstream providers add fields of their own
    _omit_if_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in self._omit_if_none:
            if data.get(key, 0) is None:
                del data[key]
        return data

    def _omitted(self, key: str) -> bool:
        """Whether the JSON leaves ``key`` out."""
        return key in self._omit_if_none and getattr(self, key) is None

    def keys(self) -> list[str]:
        fields = type(self).model_fields
        return [k for k, f in fields.items() if not f.exclude and not self._omitted(k)]

    def __getitem__(self, key: str) -> Any:
        info = type(self).model_fields.get(key)
        if info is None or info.exclude or self._omitted(key):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.keys()

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]  # a mapping's keys, not (name, value)
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __bool__(self) -> bool:  # an object is true even when its JSON is empty (an empty delta)
        return True

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def values(self) -> list[Any]:
        return [getattr(self, k) for k in self.keys()]


class TopLogprob(_Out):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(_Out):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(_Out):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class FunctionCall(_Out):
    name: str
    arguments: str


class ToolCall(_Out):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(_Out):
    _omit_if_none = frozenset({"tool_calls", "function_call"})

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None


class Choice(_Out):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason


class PromptTokensDetails(_Out):
    cached_tokens: int = 0
    audio_tokens: int = 0


class CompletionTokensDetails(_Out):
    reasoning_tokens: int = 0
    audio_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


class Usage(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)
    completion_tokens_details: CompletionTokensDetails = Field(default_factory=CompletionTokensDetails)

    @classmethod
    def of(cls, prompt: int, completion: int, cached: int = 0) -> Usage:
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
        )


class ChatCompletion(_Out):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    service_tier: str | None = None
    system_fingerprint: str | None = None


class ToolCallDelta(_Out):
    _omit_if_none = frozenset({"id", "type", "function"})

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, str] | None = None


class Delta(_Out):
    _omit_if_none = frozenset({"role", "content", "refusal", "tool_calls", "function_call"})

    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    function_call: dict[str, str] | None = None


class ChunkChoice(_Out):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(_Out):
    """One SSE event of a streamed completion.

    ``usage`` is left out unless the request asked for ``stream_options.include_usage``; then it is
    ``null`` on every chunk but the last, which has ``choices: []``. :attr:`with_usage_field` says
    which of the two the chunk is serialised as.
    """

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChunkChoice]
    usage: Usage | None = None
    service_tier: str | None = None
    with_usage_field: bool = Field(default=False, exclude=True)

    @model_serializer(mode="wrap")
    def _omit(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in [k for k in ("usage", "service_tier") if k in data and self._omitted(k)]:
            del data[key]
        return data

    def _omitted(self, key: str) -> bool:
        if key == "usage":
            return not self.with_usage_field and self.usage is None
        return key == "service_tier" and self.service_tier is None


class Model(_Out):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(_Out):
    object: Literal["list"] = "list"
    data: list[Model]
