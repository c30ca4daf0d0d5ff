"""OpenAI's Responses API request (``POST /v1/responses``) as pydantic models.

Fields follow the order of OpenAI's API reference (https://platform.openai.com/docs/api-reference/responses/create).
Every documented field is accepted by the model; what chatgate cannot honour (built-in tools, ``reasoning``,
``prompt`` templates, ``conversation``) is refused with a 400 naming the parameter, by
:func:`chatgate.protocol.responses_validation.check_responses`, never dropped. Unknown extra fields are
ignored, as OpenAI's SDKs may send newer ones; models are strict (``"0.7"`` is not a temperature).

The response object and the stream's events are in :mod:`chatgate.protocol.responses_objects`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chatgate.protocol.requests import ToolName

Includable = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
]
LOGPROBS = "message.output_text.logprobs"
ItemStatus = Literal["in_progress", "completed", "incomplete"]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class InputPart(_Strict):
    """A content part of an input message: text (``input_text``, or ``output_text``/``refusal`` in an
    assistant message), or media (``input_image``, ``input_file``, ``input_audio``)."""

    type: Literal["input_text", "input_image", "input_file", "input_audio", "output_text", "refusal"]
    text: str | None = None
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None
    input_audio: dict[str, Any] | None = None
    refusal: str | None = None
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class InputItem(_Strict):
    """One item of ``input``: a message (``type`` may be left out), an earlier ``function_call``, a
    ``function_call_output`` answering one, or an ``item_reference`` to an item chatgate stored."""

    type: Literal["message", "function_call", "function_call_output", "item_reference"] | None = None
    id: str | None = None
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[InputPart] | None = None
    status: ItemStatus | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[InputPart] | None = None

    @property
    def kind(self) -> str:
        return self.type or "message"


class Tool(_Strict):
    """A tool: ``function`` tools are served; the built-in ones (``web_search``, ``file_search``,
    ``code_interpreter``, ``computer_use_preview``, ``image_generation``, ``mcp``, …) get a 400."""

    type: str
    name: ToolName | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceObject(_Strict):
    """``{"type": "function", "name": …}`` or ``{"type": "allowed_tools", "mode": …, "tools": [...]}`` (or a
    built-in tool's type, refused)."""

    type: str
    name: str | None = None
    mode: Literal["auto", "required"] | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None


ToolChoice = Literal["none", "auto", "required"] | ToolChoiceObject


class TextFormat(_Strict):
    """``text.format``: ``text``, ``json_object`` or ``json_schema`` (``name``, ``schema``, ``strict``)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]+$", max_length=64)] | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class Reasoning(_Strict):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None

    def asked(self) -> bool:
        return any(v is not None for v in (self.effort, self.summary, self.generate_summary))


class ResponsesStreamOptions(_Strict):
    include_obfuscation: bool | None = None


class ResponsesRequest(_Strict):
    """The body of ``POST /v1/responses``."""

    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    include: Annotated[list[Includable], Field(max_length=16)] | None = None
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=16)] | None = None
    max_tool_calls: Annotated[int, Field(ge=1)] | None = None
    metadata: dict[str, str] | None = None
    model: str
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    prompt: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    reasoning: Reasoning | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: ResponsesStreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    text: TextConfig | None = None
    tool_choice: ToolChoice | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None

    # --- chatgate extensions, as on Chat Completions (the SDK's ``extra_body``) ----------------
    seed: int | None = None
    """The same request with the same seed gives the same output."""
    top_k: Annotated[int, Field(ge=0)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    fallback_models: Annotated[list[str], Field(max_length=10)] | None = None

    @property
    def stored(self) -> bool:
        """``store`` defaults to true, as OpenAI's."""
        return self.store is not False

    @property
    def wants_logprobs(self) -> bool:
        return LOGPROBS in (self.include or [])

    @property
    def obfuscated(self) -> bool:
        """Delta events carry an ``obfuscation`` field unless ``stream_options.include_obfuscation`` is false."""
        return self.stream_options is None or self.stream_options.include_obfuscation is not False

    def items(self) -> list[InputItem]:
        """``input`` as items (a string is one user message)."""
        if self.input is None:
            return []
        if isinstance(self.input, str):
            return [InputItem(type="message", role="user", content=self.input)]
        return list(self.input)
