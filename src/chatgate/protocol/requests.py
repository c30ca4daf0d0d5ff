"""OpenAI's CreateChatCompletionRequest as pydantic models.

Fields follow the order of OpenAI's API reference
(https://platform.openai.com/docs/api-reference/chat/create). Every documented field is accepted;
whether a backend implements it is decided by the backend, which answers a 400 for a field it
cannot honour instead of dropping it. Unknown extra fields are ignored, as OpenAI's SDKs may send
newer ones. Models are strict: ``"0.7"`` is not a temperature, as OpenAI rejects it too.

chatgate's own extensions are fenced at the end of :class:`ChatCompletionRequest`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class ContentPart(_Strict):
    """One element of an array ``content``. Only ``text`` parts carry text; the others are media."""

    type: Literal["text", "image_url", "input_audio", "file", "refusal"]
    text: str | None = None
    image_url: dict[str, Any] | None = None
    input_audio: dict[str, Any] | None = None
    file: dict[str, Any] | None = None
    refusal: str | None = None


class ChatMessage(_Strict):
    """A message of the conversation, any role."""

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    refusal: str | None = None
    audio: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    function_call: dict[str, Any] | None = None

    def text(self) -> str:
        """The message's text: the string content, or its text parts joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or p.refusal or "" for p in self.content if p.type in ("text", "refusal"))


ToolName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]+$", max_length=64)]


class FunctionDef(_Strict):
    """A function the model may call: name, description and a JSON schema for its arguments."""

    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def parameter_schema(self) -> dict[str, Any]:
        return self.parameters if self.parameters is not None else {"type": "object", "properties": {}}


class Tool(_Strict):
    type: Literal["function", "custom"]
    function: FunctionDef | None = None
    custom: dict[str, Any] | None = None


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function", "allowed_tools", "custom"]
    function: NamedFunction | None = None
    allowed_tools: dict[str, Any] | None = None
    custom: dict[str, Any] | None = None


class JSONSchemaFormat(_Strict):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, populate_by_name=True)

    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]+$", max_length=64)]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


Penalty = Annotated[float, Field(ge=-2, le=2)]
Probability = Annotated[float, Field(ge=0, le=1)]


class ChatCompletionRequest(_Strict):
    """The body of ``POST /v1/chat/completions``."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    model: str
    audio: dict[str, Any] | None = None
    frequency_penalty: Penalty | None = None
    function_call: Literal["none", "auto"] | NamedFunction | None = None
    functions: Annotated[list[FunctionDef], Field(min_length=1, max_length=128)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    metadata: dict[str, str] | None = None
    modalities: list[str] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    parallel_tool_calls: bool | None = None
    prediction: dict[str, Any] | None = None
    presence_penalty: Penalty | None = None
    prompt_cache_key: str | None = None
    reasoning_effort: str | None = None
    response_format: ResponseFormat | None = None
    safety_identifier: str | None = None
    seed: int | None = None
    service_tier: str | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    top_p: Probability | None = None
    user: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None

    # --- chatgate extensions, as llama.cpp's and vLLM's servers accept them ---------------------
    top_k: Annotated[int, Field(ge=0)] | None = None
    """Sample from the k most likely tokens only (0 = off)."""
    min_p: Probability | None = None
    """Drop tokens whose probability is below min_p times the top token's."""
    repetition_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    """Multiplicative penalty on tokens already present (1.0 = off), as in llama.cpp/vLLM."""
    fallback_models: Annotated[list[str], Field(max_length=10)] | None = None
    """Models to try, in order, when the requested one fails with a retryable or context-window error."""
    retries: Annotated[int, Field(ge=0, le=10)] | None = None
    """Retries per model on retryable upstream errors (default: the model's configured number)."""
    timeout: Annotated[float, Field(gt=0, le=3600)] | None = None
    """Seconds allowed per upstream attempt (for a stream: until its first chunk)."""

    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        return [s for s in stops if s]

    def completion_limit(self) -> int | None:
        """``max_completion_tokens`` wins over the deprecated ``max_tokens``."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def choices(self) -> int:
        return self.n if self.n is not None else 1

    def wants_usage_chunk(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)
