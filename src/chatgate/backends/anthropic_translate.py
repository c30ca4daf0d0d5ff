"""Translation between chatgate's protocol models (OpenAI's format) and Anthropic's Messages API.

Request: system and developer messages become the top-level ``system``; tool results become user
turns of ``tool_result`` blocks; consecutive turns of one role are merged, as Anthropic wants
alternating turns. ``response_format`` is emulated with a forced tool, :data:`JSON_TOOL`, whose
input is the JSON answer. What Anthropic cannot do and would change the answer's shape (``n`` > 1,
logprobs, audio) is a 400; sampling hints it lacks (penalties, ``logit_bias``, ``seed``, ``min_p``,
``repetition_penalty``) are left out, as the OpenAI-compatible backend leaves them out for
providers that reject them.

Response: text blocks become ``content``, ``tool_use`` blocks ``tool_calls`` (or the legacy
``function_call``), and usage counts cache reads and writes as prompt tokens.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from chatgate.errors import UpstreamError
from chatgate.protocol import AssistantMessage, ChatCompletion, ChatMessage, Choice, FinishReason, Usage
from chatgate.protocol.requests import ChatCompletionRequest, ContentPart, FunctionDef
from chatgate.protocol.responses import FunctionCall, ToolCall

DEFAULT_MAX_TOKENS = 4096
JSON_TOOL = "json_output"
"""The tool that carries a ``response_format`` answer; its input is returned as ``content``."""
STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


@dataclass(frozen=True)
class Plan:
    """What reading the answer needs to know about the request."""

    json_mode: bool = False
    """A ``json_output`` tool call is the answer's content."""
    legacy: bool = False
    """``functions``/``function_call``: answer with ``message.function_call``."""
    forced: bool = False
    """A named tool choice: finish_reason ``stop``, as OpenAI answers a forced function."""

    def finish_reason(self, stop_reason: str | None, *, called: bool) -> FinishReason:
        reason = STOP_REASONS.get(stop_reason or "", "stop")
        if reason not in ("stop", "tool_calls"):
            return reason
        if not called or self.forced:
            return "stop"  # a JSON answer, or a tool that was forced by name
        return "function_call" if self.legacy else "tool_calls"


def invalid(message: str, param: str | None, code: str = "unsupported_parameter") -> UpstreamError:
    return UpstreamError(message, status=400, type="invalid_request_error", param=param, code=code, retryable=False)


# --- request ----------------------------------------------------------------------------------------


def request_body(req: ChatCompletionRequest, model: str, *, stream: bool) -> tuple[dict[str, Any], Plan]:
    """Anthropic's request body for ``req``, and the :class:`Plan` for reading its answer."""
    check_supported(req)
    system, messages = translate_messages(req.messages)
    body: dict[str, Any] = {"model": model, "max_tokens": req.completion_limit() or DEFAULT_MAX_TOKENS}
    if system:
        body["system"] = system
    body["messages"] = messages
    if req.temperature is not None:
        body["temperature"] = min(req.temperature, 1.0)  # Anthropic's range is 0..1
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.top_k:
        body["top_k"] = req.top_k
    if stops := req.stop_sequences():
        body["stop_sequences"] = stops
    if user := req.user or req.safety_identifier:
        body["metadata"] = {"user_id": user}
    tools, plan = tool_fields(req)
    body.update(tools)
    if stream:
        body["stream"] = True
    return body, plan


def check_supported(req: ChatCompletionRequest) -> None:
    if req.choices() > 1:
        raise invalid("Anthropic returns one choice per request: 'n' must be 1 for this model.", "n")
    if req.logprobs or req.top_logprobs:
        raise invalid("Anthropic does not return logprobs.", "logprobs" if req.logprobs else "top_logprobs")
    if req.audio is not None or "audio" in (req.modalities or []):
        raise invalid("Anthropic does not produce audio.", "modalities" if req.audio is None else "audio")
    if any(t.type != "function" for t in req.tools or []):
        raise invalid("Only function tools can be used with Anthropic models.", "tools")


def translate_messages(messages: list[ChatMessage]) -> tuple[str | None, list[dict[str, Any]]]:
    """(system prompt, alternating user/assistant turns)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    legacy_id: str | None = None  # the id given to the last legacy function_call
    for i, m in enumerate(messages):
        if m.role in ("system", "developer"):
            system.append(m.text())
            continue
        if m.role == "assistant":
            role, blocks = "assistant", assistant_blocks(m, i)
            if m.function_call is not None:
                legacy_id = f"toolu_legacy_{i}"
                blocks.append(_tool_use(legacy_id, m.function_call, f"messages[{i}].function_call"))
        elif m.role in ("tool", "function"):
            call_id = m.tool_call_id if m.role == "tool" else legacy_id
            if not call_id:
                raise invalid(f"messages[{i}] answers no tool call.", f"messages[{i}].tool_call_id", "invalid_value")
            role, blocks = "user", [{"type": "tool_result", "tool_use_id": call_id, "content": m.text()}]
        else:
            role, blocks = "user", content_blocks(m.content, i)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # a lone text block is sent as a plain string
        if len(turn["content"]) == 1 and turn["content"][0]["type"] == "text":
            turn["content"] = turn["content"][0]["text"]
    return ("\n\n".join(s for s in system if s) or None), turns


def assistant_blocks(m: ChatMessage, i: int) -> list[dict[str, Any]]:
    blocks = content_blocks(m.content, i)
    for j, call in enumerate(m.tool_calls or []):
        param = f"messages[{i}].tool_calls[{j}]"
        if call.get("type", "function") != "function" or not isinstance(call.get("function"), dict):
            raise invalid("Only function tool calls can be sent to Anthropic models.", param, "invalid_value")
        blocks.append(_tool_use(str(call.get("id") or f"toolu_{i}_{j}"), call["function"], param))
    return blocks


def _tool_use(call_id: str, function: dict[str, Any], param: str) -> dict[str, Any]:
    arguments = function.get("arguments") or "{}"
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise invalid("Tool call arguments must be a JSON object.", f"{param}.arguments", "invalid_value")
    return {"type": "tool_use", "id": call_id, "name": str(function.get("name", "")), "input": parsed}


def content_blocks(content: str | list[ContentPart] | None, i: int) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        param = f"messages[{i}].content[{j}]"
        if part.type in ("text", "refusal"):
            text = part.text if part.type == "text" else part.refusal
            if text:
                blocks.append({"type": "text", "text": text})
        elif part.type == "image_url":
            url = (part.image_url or {}).get("url")
            blocks.append({"type": "image", "source": _source(url, param + ".image_url.url", url_ok=True)})
        elif part.type == "file" and (part.file or {}).get("file_data"):
            source = _source((part.file or {}).get("file_data"), param + ".file.file_data", url_ok=False)
            blocks.append({"type": "document", "source": source})
        else:
            raise invalid(f"Content parts of type '{part.type}' cannot be sent to Anthropic models.", param + ".type")
    return blocks


def _source(url: Any, param: str, *, url_ok: bool) -> dict[str, Any]:
    """An image or document source: a URL, or the base64 data of a ``data:`` URI."""
    if not isinstance(url, str):
        raise invalid("Expected a URL or a data URI.", param, "invalid_value")
    if url_ok and url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    header, sep, data = url.partition(",")
    if url.startswith("data:") and sep and header.endswith(";base64"):
        return {"type": "base64", "media_type": header[len("data:") : -len(";base64")], "data": data}
    raise invalid("Expected an http(s) URL or a base64 data URI.", param, "invalid_value")


def tool_fields(req: ChatCompletionRequest) -> tuple[dict[str, Any], Plan]:
    """``tools`` and ``tool_choice``, with the ``json_output`` tool when a JSON answer is asked for."""
    functions, choice, legacy = _functions(req)
    tools = [_tool(f.name, f.description, f.parameter_schema()) for f in functions]
    schema = json_schema(req)
    if schema is not None:
        if not functions or choice == "none":
            tools, choice = [], JSON_TOOL
        elif choice in ("auto", "required", None):
            choice = "required"  # a user tool or the JSON answer
        tools.append(_tool(JSON_TOOL, "Respond with this tool: its input is your whole answer.", schema))
    if not tools:
        return {}, Plan(legacy=legacy)
    spec = _choice_spec(choice)
    if spec["type"] != "none" and (legacy or choice == JSON_TOOL or req.parallel_tool_calls is False):
        spec["disable_parallel_tool_use"] = True
    fields: dict[str, Any] = {"tools": tools}
    if choice is not None or "disable_parallel_tool_use" in spec:
        fields["tool_choice"] = spec
    forced = choice not in ("auto", "required", "none", None, JSON_TOOL)
    return fields, Plan(json_mode=schema is not None, legacy=legacy, forced=forced)


def _choice_spec(choice: str | None) -> dict[str, Any]:
    """OpenAI's tool_choice (auto/required/none/a function's name) as Anthropic's."""
    if choice in (None, "auto"):
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    return {"type": "tool", "name": choice}


def _functions(req: ChatCompletionRequest) -> tuple[list[FunctionDef], str | None, bool]:
    """(functions, choice: auto/required/none/a name/None, legacy)."""
    if req.tools:
        functions = [t.function for t in req.tools if t.function is not None]
        tc = req.tool_choice
        if tc is None or isinstance(tc, str):
            return functions, tc, False
        if tc.type != "function" or tc.function is None:
            raise invalid(f"tool_choice of type '{tc.type}' is not supported for Anthropic models.", "tool_choice")
        return functions, tc.function.name, False
    if req.functions:
        fc = req.function_call
        return list(req.functions), fc if fc is None or isinstance(fc, str) else fc.name, True
    return [], None, False


def _tool(name: str, description: str | None, schema: dict[str, Any]) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": name}
    if description:
        tool["description"] = description
    tool["input_schema"] = schema
    return tool


def json_schema(req: ChatCompletionRequest) -> dict[str, Any] | None:
    """The schema a JSON answer must follow, or None when the answer is free text."""
    rf = req.response_format
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_schema" and rf.json_schema is not None and rf.json_schema.schema_ is not None:
        return rf.json_schema.schema_
    return {"type": "object"}


# --- response ---------------------------------------------------------------------------------------


def completion(body: dict[str, Any], plan: Plan, model: str) -> ChatCompletion:
    """An Anthropic message as a chat completion (raises KeyError/TypeError/ValueError on a bad shape)."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in body["content"]:
        if block["type"] == "text" and not plan.json_mode:
            texts.append(block["text"])
        elif block["type"] == "tool_use" and plan.json_mode and block["name"] == JSON_TOOL:
            texts.append(json.dumps(block["input"]))
        elif block["type"] == "tool_use":
            function = FunctionCall(name=block["name"], arguments=json.dumps(block["input"]))
            calls.append(ToolCall(id=block["id"], function=function))
    message = AssistantMessage(
        content="".join(texts) if texts else None,
        tool_calls=calls if calls and not plan.legacy else None,
        function_call=calls[0].function if calls and plan.legacy else None,
    )
    reason = plan.finish_reason(body.get("stop_reason"), called=bool(calls))
    return ChatCompletion(
        id=str(body["id"]),
        created=int(time.time()),
        model=str(body.get("model") or model),
        choices=[Choice(index=0, message=message, finish_reason=reason)],
        usage=usage(body.get("usage") or {}),
    )


def usage(u: dict[str, Any]) -> Usage:
    """Anthropic's ``input_tokens`` leave out cache reads and writes; OpenAI's prompt_tokens count them."""
    cached = int(u.get("cache_read_input_tokens") or 0)
    prompt = int(u.get("input_tokens") or 0) + cached + int(u.get("cache_creation_input_tokens") or 0)
    return Usage.of(prompt, int(u.get("output_tokens") or 0), cached=cached)
