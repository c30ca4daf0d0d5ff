"""Turn a ``POST /v1/responses`` body into a :class:`ResponsesRequest`, or raise OpenAI's 400.

Sizes are bounded before parsing (as for Chat Completions: the same ``limits``), pydantic's errors are
translated into OpenAI's wording with ``param`` in its notation (``input[0].content[1].type``), and the
rules a type cannot express are checked after parsing: each item's required fields, tools and
``tool_choice``, and the parameters chatgate cannot honour (built-in tools, ``reasoning``, ``prompt``,
``conversation``, a streamed ``background`` response), each a 400 naming the parameter.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from chatgate.config import LimitsConfig
from chatgate.errors import InvalidRequestError, UnsupportedParameterError
from chatgate.protocol.decoding import decode_body
from chatgate.protocol.limits import _over, _text_size, check_chat
from chatgate.protocol.responses_api import InputItem, ResponsesRequest, ToolChoiceObject
from chatgate.protocol.validation import _kind, _translate

_ROLE_PARTS = {
    "assistant": frozenset({"output_text", "refusal"}),
    "user": frozenset({"input_text", "input_image", "input_file", "input_audio"}),
}
_INTEGERS = frozenset({"max_output_tokens", "max_tool_calls", "top_logprobs", "top_k", "seed"})
_REQUIRED = {
    "message": ("role", "content"),
    "function_call": ("call_id", "name", "arguments"),
    "function_call_output": ("call_id", "output"),
    "item_reference": ("id",),
}


def parse_responses_request(body: bytes, limits: LimitsConfig | None = None) -> ResponsesRequest:
    """Parse and validate a request body within ``limits``; raise :class:`InvalidRequestError` on any fault."""
    limits = limits or LimitsConfig()
    raw = decode_body(body, limits)
    if not isinstance(raw, dict):
        raise InvalidRequestError(
            f"Invalid type for request body: expected an object, but got {_kind(raw)} instead.", code="invalid_type"
        )
    check_input(raw, limits)
    check_chat({k: v for k, v in raw.items() if k not in ("input", "instructions")}, limits)
    try:
        request = ResponsesRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _integer_words(_translate(exc.errors(include_url=False), raw, body)) from None
    check_responses(request)
    return request


def _integer_words(error: InvalidRequestError) -> InvalidRequestError:
    """The shared translator knows chat's integer fields; these are the Responses API's."""
    if error.param in _INTEGERS and error.code is not None and error.code.startswith("decimal_"):
        error.code = "integer_" + error.code.removeprefix("decimal_")
        error.message = error.message.replace(": decimal ", ": integer ", 1)
    return error


def check_input(raw: dict[str, Any], limits: LimitsConfig) -> None:
    """``input`` and ``instructions`` within the chat limits: items, characters per item and in all."""
    items = raw.get("input")
    if isinstance(items, list) and len(items) > limits.max_messages:
        raise _over("array", "input", limits.max_messages, len(items))
    named = [("instructions", raw.get("instructions"))]
    named += [(f"input[{i}]", item) for i, item in enumerate(items)] if isinstance(items, list) else [("input", items)]
    total = 0
    for param, value in named:
        size = _text_size(value)
        if size > limits.max_message_chars:
            raise _over("string", param, limits.max_message_chars, size)
        total += size
    if total > limits.max_total_chars:
        raise _over("string", "input", limits.max_total_chars, total)


def check_responses(req: ResponsesRequest) -> None:
    """Rules OpenAI enforces that types alone cannot express, and what chatgate cannot honour."""
    if req.input is None and req.previous_response_id is None:
        raise InvalidRequestError("Missing required parameter: 'input'.", param="input",
                                  code="missing_required_parameter")  # fmt: skip
    for i, item in enumerate(req.items() if isinstance(req.input, list) else []):
        _check_item(item, f"input[{i}]")
    _check_tools(req)
    fmt = req.text.format if req.text is not None else None
    if fmt is not None and fmt.type == "json_schema":
        for field, value in (("name", fmt.name), ("schema", fmt.schema_)):
            if value is None:
                raise _missing(f"text.format.{field}")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequestError("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                                  param="stream_options", code="invalid_value")  # fmt: skip
    _check_unsupported(req)


def _check_unsupported(req: ResponsesRequest) -> None:
    unsupported = {
        "reasoning": req.reasoning is not None and req.reasoning.asked(),
        "prompt": req.prompt is not None,
        "conversation": req.conversation is not None,
        "background": bool(req.background and req.stream),
    }
    for param, present in unsupported.items():
        if present:
            raise UnsupportedParameterError(
                f"Unsupported parameter: '{param}' is not supported by chatgate's Responses API for this model.",
                param=param,
            )
    if req.background and not req.stored:
        raise InvalidRequestError("Background responses require 'store' to be true.", param="background",
                                  code="invalid_value")  # fmt: skip


def _missing(param: str) -> InvalidRequestError:
    return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param,
                               code="missing_required_parameter")  # fmt: skip


def _check_item(item: InputItem, where: str) -> None:
    for field in _REQUIRED[item.kind]:
        if getattr(item, field) is None:
            raise _missing(f"{where}.{field}")
    if item.kind != "message" or not isinstance(item.content, list):
        return
    allowed = _ROLE_PARTS.get(item.role or "user", _ROLE_PARTS["user"])
    for j, part in enumerate(item.content):
        if part.type not in allowed:
            raise InvalidRequestError(
                f"Invalid value: '{part.type}'. Supported values are: {', '.join(sorted(allowed))}.",
                param=f"{where}.content[{j}].type", code="invalid_value",
            )  # fmt: skip
        if part.type in ("input_text", "output_text") and part.text is None:
            raise _missing(f"{where}.content[{j}].text")
        if part.type == "refusal" and part.refusal is None:
            raise _missing(f"{where}.content[{j}].refusal")


def _check_tools(req: ResponsesRequest) -> None:
    names: set[str] = set()
    for i, tool in enumerate(req.tools or []):
        if tool.type != "function":
            raise UnsupportedParameterError(
                f"Tools of type '{tool.type}' are not supported by chatgate; use function tools.",
                param=f"tools[{i}].type",
            )
        if tool.name is None:
            raise _missing(f"tools[{i}].name")
        names.add(tool.name)
    choice = req.tool_choice
    if choice is not None and choice != "none" and not req.tools:
        raise InvalidRequestError(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
            param="tool_choice", code="invalid_value",
        )  # fmt: skip
    if isinstance(choice, ToolChoiceObject):
        _check_choice(choice, names)


def _check_choice(choice: ToolChoiceObject, names: set[str]) -> None:
    if choice.type == "function":
        if choice.name is None:
            raise _missing("tool_choice.name")
        if choice.name not in names:
            raise InvalidRequestError(f"Tool choice '{choice.name}' not found in 'tools' parameter.",
                                      param="tool_choice", code="invalid_value")  # fmt: skip
        return
    if choice.type != "allowed_tools":
        raise UnsupportedParameterError(f"tool_choice of type '{choice.type}' is not supported by chatgate.",
                                        param="tool_choice.type")  # fmt: skip
    for field in ("mode", "tools"):
        if getattr(choice, field) is None:
            raise _missing(f"tool_choice.{field}")
    for j, allowed in enumerate(choice.tools or []):
        if allowed.get("type") != "function" or allowed.get("name") not in names:
            raise InvalidRequestError(
                f"Invalid value for 'tool_choice.tools[{j}]': expected a function tool among 'tools', "
                "as {\"type\": \"function\", \"name\": ...}.",
                param=f"tool_choice.tools[{j}]", code="invalid_value",
            )  # fmt: skip
