"""Anthropic's Messages API to and from chatgate's protocol (OpenAI's chat format), at the server's edge.

The reverse of ``backends/anthropic_translate.py`` (chat out to an Anthropic upstream), whose vocabulary
it shares: ``system`` becomes a system message; ``tool_result`` blocks become ``tool`` messages, placed
before the rest of their user turn (Anthropic puts them first); ``tool_use`` blocks become
``tool_calls``; ``tool_choice`` ``any`` is ``required``. Answers go back as one ``text`` block and one
``tool_use`` block per call, with Anthropic's stop reasons and usage.
"""

from __future__ import annotations

import json
from typing import Any

from chatgate.errors import InvalidRequestError
from chatgate.protocol import ChatCompletion, ChatCompletionRequest, ChatMessage, ContentPart, Usage
from chatgate.protocol.messages import (
    CountTokensRequest,
    ImageBlock,
    Message,
    MessageParam,
    MessagesRequest,
    MessageUsage,
    StopReason,
    TextBlock,
    TextOut,
    ToolResultBlock,
    ToolUseBlock,
    ToolUseOut,
)
from chatgate.protocol.requests import (
    FunctionDef,
    JSONSchemaFormat,
    NamedFunction,
    NamedToolChoice,
    ResponseFormat,
    StreamOptions,
    Tool,
)

STOP_OF: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
"""A chat ``finish_reason`` as Anthropic's ``stop_reason``: the inverse of ``STOP_REASONS`` of
``backends/anthropic_translate.py`` (``stop`` cannot tell a stop sequence from the end of the turn: it is
``end_turn``)."""


# --- request ----------------------------------------------------------------------------------------


def chat_request(req: CountTokensRequest) -> ChatCompletionRequest:
    """``req`` (a Messages or count_tokens body) as a chat completion request."""
    messages = system_messages(req.system)
    called: set[str] = set()  # the tool_use ids of the turn before
    for i, message in enumerate(req.messages):
        check_results(message, i, called)
        messages += chat_messages(message, i)
        blocks = message.content if isinstance(message.content, list) and message.role == "assistant" else []
        called = {b.id for b in blocks if isinstance(b, ToolUseBlock)}
    fields: dict[str, Any] = {"model": req.model, "messages": messages}
    if req.tools:
        functions = [FunctionDef(name=t.name, description=t.description, parameters=t.input_schema) for t in req.tools]
        fields["tools"] = [Tool(type="function", function=f) for f in functions]
        fields.update(tool_choice_fields(req))
    if isinstance(req, MessagesRequest):
        fields.update(sampling_fields(req))
    return ChatCompletionRequest(**fields)


def sampling_fields(req: MessagesRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {"max_tokens": req.max_tokens}
    if req.stop_sequences:
        fields["stop"] = list(req.stop_sequences)
    for name in ("temperature", "top_p", "top_k"):
        if getattr(req, name) is not None:
            fields[name] = getattr(req, name)
    if req.metadata is not None and req.metadata.user_id:
        fields["user"] = req.metadata.user_id
    if req.output_config is not None and req.output_config.format is not None:
        schema = JSONSchemaFormat(name="output", schema=req.output_config.format.schema_)
        fields["response_format"] = ResponseFormat(type="json_schema", json_schema=schema)
    if req.stream:  # the usage chunk carries message_delta's usage
        fields.update(stream=True, stream_options=StreamOptions(include_usage=True))
    return fields


def tool_choice_fields(req: CountTokensRequest) -> dict[str, Any]:
    choice = req.tool_choice
    if choice is None:
        return {}
    fields: dict[str, Any] = {}
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequestError("tool_choice.name: Field required when type is 'tool'.", param="tool_choice.name")
        if choice.name not in {t.name for t in req.tools or []}:
            raise InvalidRequestError(f"Tool '{choice.name}' not found in tools.", param="tool_choice.name")
        fields["tool_choice"] = NamedToolChoice(type="function", function=NamedFunction(name=choice.name))
    else:
        fields["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    if choice.disable_parallel_tool_use and choice.type != "none":
        fields["parallel_tool_calls"] = False
    return fields


def system_messages(system: str | list[TextBlock] | None) -> list[ChatMessage]:
    text = system if isinstance(system, str) or system is None else "\n\n".join(b.text for b in system)
    return [ChatMessage(role="system", content=text)] if text else []


def check_results(message: MessageParam, i: int, called: set[str]) -> None:
    """Each ``tool_result`` answers a ``tool_use`` of the turn before, as Anthropic requires."""
    for j, block in enumerate(message.content if isinstance(message.content, list) else []):
        if isinstance(block, ToolResultBlock) and block.tool_use_id not in called:
            raise InvalidRequestError(
                f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                f"{block.tool_use_id}. Each `tool_result` block must have a corresponding `tool_use` block in "
                "the previous message.",
                param=f"messages.{i}.content.{j}",
            )


def chat_messages(message: MessageParam, i: int) -> list[ChatMessage]:
    """One Anthropic turn as chat messages: an assistant message (text and tool calls), or the tool
    messages of its ``tool_result`` blocks followed by a user message with the rest."""
    if isinstance(message.content, str):
        return [ChatMessage(role=message.role, content=message.content)]
    if message.role == "assistant":
        return [assistant_message(message, i)]
    tools: list[ChatMessage] = []
    parts: list[ContentPart] = []
    for j, block in enumerate(message.content):
        where = f"messages.{i}.content.{j}"
        if isinstance(block, ToolResultBlock):
            text = tool_result_text(block, where)
            tools.append(ChatMessage(role="tool", tool_call_id=block.tool_use_id, content=text))
        elif isinstance(block, ToolUseBlock):
            raise InvalidRequestError(f"{where}: tool_use blocks can only be in assistant messages.", param=where)
        elif isinstance(block, (TextBlock, ImageBlock)):
            parts.append(content_part(block, where))
    return tools + ([ChatMessage(role="user", content=parts)] if parts else [])


def assistant_message(message: MessageParam, i: int) -> ChatMessage:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(message.content):
        where = f"messages.{i}.content.{j}"
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append({"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}})
        elif isinstance(block, (ImageBlock, ToolResultBlock)):
            raise InvalidRequestError(f"{where}: {block.type} blocks can only be in user messages.", param=where)
    return ChatMessage(role="assistant", content="".join(texts) if texts or not calls else None,
                       tool_calls=calls or None)  # fmt: skip


def tool_result_text(block: ToolResultBlock, where: str) -> str:
    """A tool result's content as the tool message's text (an error result says so)."""
    if block.content is None or isinstance(block.content, str):
        text = block.content or ""
    else:
        if any(isinstance(b, ImageBlock) for b in block.content):
            raise InvalidRequestError(f"{where}.content: images in tool results are not supported.",
                                      param=f"{where}.content")  # fmt: skip
        text = "".join(b.text for b in block.content if isinstance(b, TextBlock))
    return f"Error: {text}" if block.is_error else text


def content_part(block: TextBlock | ImageBlock, where: str) -> ContentPart:
    if isinstance(block, TextBlock):
        return ContentPart(type="text", text=block.text)
    source = block.source
    if source.type == "url" and source.url:
        return ContentPart(type="image_url", image_url={"url": source.url})
    if source.type == "base64" and source.data and source.media_type:
        return ContentPart(type="image_url", image_url={"url": f"data:{source.media_type};base64,{source.data}"})
    raise InvalidRequestError(f"{where}.source: an image needs a url, or media_type and data.", param=f"{where}.source")


# --- response ---------------------------------------------------------------------------------------


def message_id(completion_id: str) -> str:
    return "msg_" + completion_id.removeprefix("chatcmpl-")


def message_usage(usage: Usage | None) -> MessageUsage:
    """OpenAI's ``prompt_tokens`` count cache reads; Anthropic's ``input_tokens`` leave them out."""
    if usage is None:
        return MessageUsage(input_tokens=0, output_tokens=0)
    cached = usage.prompt_tokens_details.cached_tokens
    return MessageUsage(input_tokens=usage.prompt_tokens - cached, cache_read_input_tokens=cached,
                        output_tokens=usage.completion_tokens)  # fmt: skip


def message(completion: ChatCompletion) -> Message:
    """A chat completion (its first choice) as an Anthropic message."""
    choice = completion.choices[0]
    content: list[TextOut | ToolUseOut] = []
    if choice.message.content:
        content.append(TextOut(text=choice.message.content))
    for call in choice.message.tool_calls or []:
        content.append(ToolUseOut(id=call.id, name=call.function.name, input=tool_input(call.function.arguments)))
    return Message(
        id=message_id(completion.id),
        content=content,
        model=completion.model,
        stop_reason=stop_reason(choice.finish_reason, called=bool(choice.message.tool_calls)),
        usage=message_usage(completion.usage),
    )


def stop_reason(finish_reason: str, *, called: bool) -> StopReason:
    """Anthropic's stop reason; a call of a forced tool finishes ``stop`` in chat (as OpenAI's) but is ``tool_use``."""
    reason = STOP_OF.get(finish_reason, "end_turn")
    return "tool_use" if called and reason == "end_turn" else reason


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's arguments as ``input`` (an object; arguments that are not one are kept under ``arguments``)."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}
