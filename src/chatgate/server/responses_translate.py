"""The Responses API ⇄ chatgate's chat protocol, at the server's edge.

:func:`to_chat` turns a :class:`ResponsesRequest` and its whole conversation (stored items of earlier
turns, item references resolved) into a :class:`ChatCompletionRequest`; :func:`skeleton` is the response
object echoing the request's settings, and :func:`completed` fills it from a :class:`ChatCompletion`.
Everything below the server (gateway, router, backends) only ever sees chat requests.
"""

from __future__ import annotations

import time
from typing import Any

from chatgate.errors import InvalidRequestError
from chatgate.protocol import ChatCompletion, ChatCompletionRequest, ChatMessage, ContentPart, StreamOptions, Usage
from chatgate.protocol.requests import (
    FunctionDef,
    JSONSchemaFormat,
    NamedFunction,
    NamedToolChoice,
    ResponseFormat,
    Tool,
)
from chatgate.protocol.responses import ChoiceLogprobs, FinishReason
from chatgate.protocol.responses_api import InputItem, InputPart, ResponsesRequest, ToolChoiceObject
from chatgate.protocol.responses_objects import (
    FunctionCallItem,
    IncompleteDetails,
    InputTokensDetails,
    ItemStatus,
    Logprob,
    OutputItem,
    OutputMessage,
    OutputText,
    OutputTokensDetails,
    Response,
    ResponseUsage,
    Status,
    TextEcho,
    TopLogprob,
    new_id,
)

# --- request: Responses -> chat -------------------------------------------------------------------


def to_chat(req: ResponsesRequest, items: list[InputItem], model: str | None = None) -> ChatCompletionRequest:
    """The chat request answering ``req`` over the conversation ``items`` (earlier turns first)."""
    messages = [ChatMessage(role="system", content=req.instructions)] if req.instructions is not None else []
    messages += to_messages(items)
    tools, choice = _tools(req)
    logprobs = req.wants_logprobs or None
    return ChatCompletionRequest(
        model=model or req.model, messages=messages, max_completion_tokens=req.max_output_tokens,
        temperature=req.temperature, top_p=req.top_p, tools=tools, tool_choice=choice,
        parallel_tool_calls=req.parallel_tool_calls, response_format=_format(req),
        verbosity=req.text.verbosity if req.text is not None else None, logprobs=logprobs,
        top_logprobs=req.top_logprobs if logprobs else None, user=req.user, safety_identifier=req.safety_identifier,
        prompt_cache_key=req.prompt_cache_key, service_tier=req.service_tier, stream=req.stream,
        stream_options=StreamOptions(include_usage=True) if req.stream else None, seed=req.seed, top_k=req.top_k,
        min_p=req.min_p, repetition_penalty=req.repetition_penalty, fallback_models=req.fallback_models,
    )  # fmt: skip


def to_messages(items: list[InputItem]) -> list[ChatMessage]:
    """Chat messages of a conversation: consecutive ``function_call`` items become one assistant message's
    ``tool_calls`` (joined to the assistant text just before them), each output a ``tool`` message."""
    messages: list[ChatMessage] = []
    pending: dict[str, str] = {}  # call_id -> name, calls not answered yet
    for item in items:
        if item.kind == "function_call":
            messages = _add_call(messages, item)
            pending[item.call_id or ""] = item.name or ""
            continue
        if item.kind == "function_call_output":
            if item.call_id not in pending:
                raise InvalidRequestError(f"No tool call found for function call output with call_id {item.call_id}.",
                                          param="input")  # fmt: skip
            del pending[item.call_id]
            messages.append(ChatMessage(role="tool", tool_call_id=item.call_id, content=_text(item.output)))
            continue
        _unanswered(pending)
        messages.append(_message(item))
    _unanswered(pending)
    return messages


def without_oldest_turn(items: list[InputItem]) -> list[InputItem] | None:
    """The conversation from its second user message on (``truncation: auto``): its oldest turn, with
    whatever calls and outputs it held, dropped; None when only one turn is left."""
    starts = [i for i, item in enumerate(items) if item.kind == "message" and item.role == "user"]
    later = [i for i in starts if i > 0]
    return items[later[0] :] if later else None


def _unanswered(pending: dict[str, str]) -> None:
    if pending:
        raise InvalidRequestError(f"No tool output found for function call {next(iter(pending))}.", param="input")


def _add_call(messages: list[ChatMessage], item: InputItem) -> list[ChatMessage]:
    call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
    last = messages[-1] if messages else None
    if last is not None and last.role == "assistant":  # the text before the calls, or the calls before this one
        joined = last.model_copy(update={"tool_calls": [*(last.tool_calls or []), call]})
        return [*messages[:-1], joined]
    return [*messages, ChatMessage(role="assistant", content=None, tool_calls=[call])]


def _message(item: InputItem) -> ChatMessage:
    role = item.role or "user"
    content = item.content
    if content is None or isinstance(content, str):
        return ChatMessage(role=role, content=content or "")
    parts = [_part(p) for p in content]
    if all(p.type == "text" for p in parts) and len(parts) == 1:
        return ChatMessage(role=role, content=parts[0].text or "")
    return ChatMessage(role=role, content=parts)


def _part(part: InputPart) -> ContentPart:
    if part.type in ("input_text", "output_text"):
        return ContentPart(type="text", text=part.text or "")
    if part.type == "refusal":
        return ContentPart(type="refusal", refusal=part.refusal)
    if part.type == "input_image":
        return ContentPart(type="image_url", image_url={"url": part.image_url or part.file_id or "",
                                                        "detail": part.detail or "auto"})  # fmt: skip
    if part.type == "input_audio":
        return ContentPart(type="input_audio", input_audio=part.input_audio or {})
    fields = {"file_id": part.file_id, "file_data": part.file_data, "filename": part.filename}
    return ContentPart(type="file", file={k: v for k, v in fields.items() if v is not None})


def _text(output: str | list[InputPart] | None) -> str:
    if output is None or isinstance(output, str):
        return output or ""
    return "".join(p.text or "" for p in output if p.type in ("input_text", "output_text"))


def _tools(req: ResponsesRequest) -> tuple[list[Tool] | None, Any]:
    """Function tools in chat's shape, and the tool choice: ``allowed_tools`` keeps only the tools it names
    (its ``mode`` becomes the choice), a named function becomes chat's named choice."""
    if not req.tools:
        return None, req.tool_choice if isinstance(req.tool_choice, str) else None
    tools = req.tools
    choice: Any = req.tool_choice
    if isinstance(choice, ToolChoiceObject) and choice.type == "allowed_tools":
        allowed = {str(t.get("name")) for t in choice.tools or []}
        tools = [t for t in tools if t.name in allowed]
        choice = choice.mode
    elif isinstance(choice, ToolChoiceObject):
        choice = NamedToolChoice(type="function", function=NamedFunction(name=choice.name or ""))
    defs = [FunctionDef(name=t.name or "", description=t.description, parameters=t.parameters, strict=t.strict)
            for t in tools]  # fmt: skip
    chat = [Tool(type="function", function=d) for d in defs]
    return chat, choice


def _format(req: ResponsesRequest) -> ResponseFormat | None:
    fmt = req.text.format if req.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    schema = JSONSchemaFormat(name=fmt.name or "response", description=fmt.description, schema=fmt.schema_,
                              strict=fmt.strict)  # fmt: skip
    return ResponseFormat(type="json_schema", json_schema=schema)


# --- response: chat -> Responses ------------------------------------------------------------------


def skeleton(req: ResponsesRequest, model: str, response_id: str | None = None) -> Response:
    """The response object before any output: ``in_progress``, the request's settings echoed."""
    fmt = req.text.format if req.text is not None else None
    text = TextEcho(format=fmt.model_dump(mode="json", by_alias=True, exclude_none=True) if fmt else {"type": "text"},
                    verbosity=(req.text.verbosity if req.text is not None else None) or "medium")  # fmt: skip
    choice = req.tool_choice or "auto"
    return Response(
        id=response_id or new_id("resp"), created_at=int(time.time()), status="in_progress",
        background=bool(req.background),
        instructions=req.instructions, max_output_tokens=req.max_output_tokens, max_tool_calls=req.max_tool_calls,
        model=model, parallel_tool_calls=req.parallel_tool_calls is not False,
        previous_response_id=req.previous_response_id, prompt_cache_key=req.prompt_cache_key,
        safety_identifier=req.safety_identifier, service_tier=req.service_tier or "default", store=req.stored,
        temperature=req.temperature if req.temperature is not None else 1.0, text=text,
        tool_choice=choice if isinstance(choice, str) else choice.model_dump(mode="json", exclude_none=True),
        tools=[{**t.model_dump(mode="json", exclude_none=True), "strict": t.strict is not False}
               for t in req.tools or []],
        top_logprobs=req.top_logprobs or 0, top_p=req.top_p if req.top_p is not None else 1.0,
        truncation=req.truncation or "disabled", user=req.user, metadata=req.metadata or {},
    )  # fmt: skip


def completed(response: Response, completion: ChatCompletion) -> Response:
    """``response`` finished with the first choice of ``completion``: its output items, status and usage."""
    choice = completion.choices[0]
    status, incomplete = finish_status(choice.finish_reason)
    item_status: ItemStatus = "incomplete" if status == "incomplete" else "completed"
    output: list[OutputItem] = []
    message = choice.message
    if message.content or not message.tool_calls:
        text = OutputText(text=message.content or "", logprobs=logprobs_of(choice.logprobs))
        output.append(OutputMessage(id=new_id("msg"), status=item_status, content=[text]))
    for call in message.tool_calls or []:
        output.append(FunctionCallItem(id=new_id("fc"), status="completed", arguments=call.function.arguments,
                                       call_id=call.id, name=call.function.name))  # fmt: skip
    return response.model_copy(update={"status": status, "incomplete_details": incomplete, "output": output,
                                       "model": completion.model, "usage": usage_of(completion.usage)})  # fmt: skip


def finish_status(reason: FinishReason | None) -> tuple[Status, IncompleteDetails | None]:
    if reason == "length":
        return "incomplete", IncompleteDetails(reason="max_output_tokens")
    if reason == "content_filter":
        return "incomplete", IncompleteDetails(reason="content_filter")
    return "completed", None


def usage_of(usage: Usage | None) -> ResponseUsage | None:
    if usage is None:
        return None
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=usage.prompt_tokens_details.cached_tokens),
        output_tokens=usage.completion_tokens,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=usage.completion_tokens_details.reasoning_tokens),
        total_tokens=usage.total_tokens,
    )


def logprobs_of(logprobs: ChoiceLogprobs | None) -> list[Logprob]:
    """Chat's logprobs in the Responses API's shape (``bytes`` always a list)."""
    if logprobs is None or logprobs.content is None:
        return []
    return [
        Logprob(token=t.token, bytes=_bytes(t.token, t.bytes), logprob=t.logprob,
                top_logprobs=[TopLogprob(token=x.token, bytes=_bytes(x.token, x.bytes), logprob=x.logprob)
                              for x in t.top_logprobs])
        for t in logprobs.content
    ]  # fmt: skip


def _bytes(token: str, given: list[int] | None) -> list[int]:
    return given if given is not None else list(token.encode())


def as_input(item: OutputItem) -> InputItem:
    """An output item as the input item that replays it in a later turn."""
    return InputItem.model_validate(item.model_dump(mode="json"))


def item_json(item: InputItem) -> dict[str, Any]:
    """An input item as stored and listed (``input_items``): with an id, ``type`` and ``status``."""
    data = item.model_dump(mode="json", exclude_none=True)
    data["type"] = item.kind
    if "id" not in data:
        data["id"] = new_id(
            {"message": "msg", "function_call": "fc", "function_call_output": "fco"}.get(item.kind, "item")
        )
    if isinstance(data.get("content"), str):
        data["content"] = [{"type": "output_text" if item.role == "assistant" else "input_text",
                            "text": data["content"]}]  # fmt: skip
    data.setdefault("status", "completed")
    return data
