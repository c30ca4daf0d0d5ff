"""Anthropic's Messages API as pydantic models: the request of ``POST /v1/messages`` and of
``POST /v1/messages/count_tokens``, the message it answers and the events of its stream.

Fields follow the order of Anthropic's API reference (https://docs.anthropic.com/en/api/messages).
Requests are strict (``"0.7"`` is not a temperature) and ignore fields they do not know, as chatgate's
chat requests do (the SDKs may send newer ones). Server tools (web search, code execution…), documents,
citations and extended thinking are not served: their blocks are refused with a 400, except
``thinking`` blocks of earlier assistant turns, which are history and are left out of the prompt, and
the ``thinking`` parameter, which is accepted and not acted on (the answer holds no thinking blocks).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"]


class _In(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


# --- request ----------------------------------------------------------------------------------------


class TextBlock(_In):
    type: Literal["text"]
    text: str
    cache_control: dict[str, Any] | None = None


class ImageSource(_In):
    type: Literal["base64", "url"]
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class ImageBlock(_In):
    type: Literal["image"]
    source: ImageSource
    cache_control: dict[str, Any] | None = None


class ToolUseBlock(_In):
    type: Literal["tool_use"]
    id: Annotated[str, Field(min_length=1, max_length=256)]
    name: Annotated[str, Field(min_length=1, max_length=64)]
    input: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class ToolResultBlock(_In):
    type: Literal["tool_result"]
    tool_use_id: Annotated[str, Field(min_length=1, max_length=256)]
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] | None = None
    is_error: bool | None = None
    cache_control: dict[str, Any] | None = None


class ThinkingBlock(_In):
    """An earlier turn's thinking: history, left out of the prompt."""

    type: Literal["thinking", "redacted_thinking"]


ContentBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock, Field(discriminator="type")
]


class MessageParam(_In):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolDef(_In):
    """A client tool (Anthropic's ``custom`` type); server tools have no ``input_schema`` and are refused."""

    type: Literal["custom"] | None = None
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]+$", min_length=1, max_length=64)]
    description: str | None = None
    input_schema: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class ToolChoice(_In):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(_In):
    user_id: Annotated[str, Field(max_length=256)] | None = None


class OutputFormat(_In):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_In):
    """``format``: the answer is JSON following a schema (constrained decoding on the local model);
    ``effort`` is accepted and not acted on."""

    effort: str | None = None
    format: OutputFormat | None = None


class CountTokensRequest(_In):
    """The body of ``POST /v1/messages/count_tokens``: what the prompt is made of."""

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[MessageParam], Field(min_length=1)]
    system: str | list[TextBlock] | None = None
    thinking: dict[str, Any] | None = None
    tool_choice: ToolChoice | None = None
    tools: Annotated[list[ToolDef], Field(max_length=128)] | None = None


class MessagesRequest(CountTokensRequest):
    """The body of ``POST /v1/messages``."""

    max_tokens: Annotated[int, Field(ge=1)]
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    service_tier: str | None = None
    stop_sequences: Annotated[list[str], Field(max_length=4)] | None = None
    stream: bool | None = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None


# --- response ---------------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextOut(_Out):
    type: Literal["text"] = "text"
    text: str


class ToolUseOut(_Out):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class MessageUsage(_Out):
    input_tokens: int
    cache_creation_input_tokens: int | None = 0
    cache_read_input_tokens: int | None = 0
    output_tokens: int


class Message(_Out):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[TextOut | ToolUseOut]
    model: str
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: MessageUsage


class TokenCount(_Out):
    input_tokens: int


__all__ = [
    "ContentBlock",
    "CountTokensRequest",
    "ImageBlock",
    "Message",
    "MessageParam",
    "MessageUsage",
    "MessagesRequest",
    "StopReason",
    "TextBlock",
    "TextOut",
    "ThinkingBlock",
    "TokenCount",
    "ToolChoice",
    "ToolDef",
    "ToolResultBlock",
    "ToolUseBlock",
    "ToolUseOut",
]
