"""Turn a raw request body into a :class:`ChatCompletionRequest`, or raise OpenAI's 400.

Pydantic's errors are translated into OpenAI's wording and codes, with ``param`` in OpenAI's
path notation (``messages[0].role``). Rules that a type cannot express (per-role requirements,
parameters that need another one) are checked after parsing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from chatgate.config import LimitsConfig
from chatgate.errors import InvalidRequestError
from chatgate.protocol.decoding import decode_body, unparsable
from chatgate.protocol.limits import check_chat, check_metadata
from chatgate.protocol.requests import ChatCompletionRequest, ChatMessage

_EXPECTED = {
    "string_type": "a string",
    "float_type": "a decimal",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "bool_type": "a boolean",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "none_required": "null",
}
_TOKEN_ID = re.compile(r"-?[0-9]{1,18}")
_SIMPLE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}
_INTEGER_FIELDS = {"max_tokens", "max_completion_tokens", "n", "top_logprobs", "top_k", "seed", "retries"}


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_chat_request(body: bytes, limits: LimitsConfig | None = None) -> ChatCompletionRequest:
    """Parse and validate a request body within ``limits`` (default: the default limits); raise
    :class:`InvalidRequestError` on any fault."""
    limits = limits or LimitsConfig()
    raw = decode_body(body, limits)
    if not isinstance(raw, dict):
        raise InvalidRequestError(
            f"Invalid type for request body: expected an object, but got {_kind(raw)} instead.",
            code="invalid_type",
        )
    check_chat(raw, limits)
    try:
        request = ChatCompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _translate(exc.errors(include_url=False), raw, body) from None
    check_semantics(request)
    return request


M = TypeVar("M", bound=BaseModel)


def parse_model(cls: type[M], body: bytes, limits: LimitsConfig | None = None) -> M:
    """Any JSON body into ``cls``, with OpenAI-shaped 400s (for chatgate's own APIs); a ``metadata``
    field is held to OpenAI's bounds."""
    limits = limits or LimitsConfig()
    raw = decode_body(body, limits)
    if not isinstance(raw, dict):
        raise InvalidRequestError("Invalid type for request body: expected an object.", code="invalid_type")
    check_metadata(raw.get("metadata"), limits)
    try:
        return cls.model_validate_json(body)
    except ValidationError as exc:
        raise _translate(exc.errors(include_url=False), raw, body) from None


def param_path(loc: Sequence[int | str]) -> str:
    """``("messages", 0, "role")`` -> ``messages[0].role``; union tags are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _is_tag(part):
            continue
        else:
            out += f".{part}" if out else part
    return out


def _is_tag(part: str) -> bool:
    return part in _SIMPLE_TAGS or "[" in part or "-" in part


def _translate(errors: list[ErrorDetails], raw: dict[str, Any], body: bytes) -> InvalidRequestError:
    if any(e["type"] == "json_invalid" for e in errors):  # Python's parser took it, pydantic's did not
        return unparsable(raw, body)
    first = _most_specific(errors)
    param = param_path(first["loc"])
    same = [e for e in errors if param_path(e["loc"]) == param]
    constraint = [e for e in same if e["type"] not in _EXPECTED and e["type"] != "missing"]
    if constraint:  # the value had the right type for some alternative but broke its rule
        first = constraint[0]
    kind = first["type"]
    value = _lookup(raw, first["loc"])
    if kind == "missing":
        return InvalidRequestError(
            f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
        )
    expected = [_EXPECTED[e["type"]] for e in same if e["type"] in _EXPECTED]
    if expected and not constraint:
        want = expected[0] if len(set(expected)) == 1 else "one of " + " or ".join(dict.fromkeys(expected))
        return InvalidRequestError(
            f"Invalid type for '{param}': expected {want}, but got {_kind(value)} instead.",
            param=param,
            code="invalid_type",
        )
    return _value_error(first, param, value)


def _most_specific(errors: list[ErrorDetails]) -> ErrorDetails:
    """Among a union's alternatives, the error that went deepest is the informative one."""
    return max(errors, key=lambda e: len([p for p in e["loc"] if not (isinstance(p, str) and _is_tag(p))]))


def _value_error(err: ErrorDetails, param: str, value: Any) -> InvalidRequestError:
    kind = err["type"]
    ctx = err.get("ctx", {})
    field = next((p for p in reversed(err["loc"]) if isinstance(p, str) and not _is_tag(p)), "")
    number = "integer" if field in _INTEGER_FIELDS else "decimal"
    if kind in ("less_than_equal", "less_than"):
        limit = _num(ctx.get("le", ctx.get("lt")))
        return InvalidRequestError(
            f"Invalid '{param}': {number} above maximum value. Expected a value <= {limit}, but got {value} instead.",
            param=param,
            code=f"{number}_above_max_value",
        )
    if kind in ("greater_than_equal", "greater_than"):
        limit = _num(ctx.get("ge", ctx.get("gt")))
        op = ">=" if "ge" in ctx else ">"
        return InvalidRequestError(
            f"Invalid '{param}': {number} below minimum value. Expected a value {op} {limit}, but got {value} instead.",
            param=param,
            code=f"{number}_below_min_value",
        )
    if kind == "too_short":
        if isinstance(value, list) and not value:
            return InvalidRequestError(
                f"Invalid '{param}': empty array. Expected an array with minimum length "
                f"{ctx.get('min_length', 1)}, but got an empty array instead.",
                param=param,
                code="empty_array",
            )
        return InvalidRequestError(
            f"Invalid '{param}': array too short. Expected an array with minimum length "
            f"{ctx.get('min_length')}, but got an array with length {len(value)} instead.",
            param=param,
            code="array_below_min_length",
        )
    if kind == "too_long":
        return InvalidRequestError(
            f"Invalid '{param}': array too long. Expected an array with maximum length "
            f"{ctx.get('max_length')}, but got an array with length {len(value)} instead.",
            param=param,
            code="array_above_max_length",
        )
    if kind == "string_pattern_mismatch":
        return InvalidRequestError(
            f"Invalid '{param}': string does not match pattern. Expected a string that matches the pattern "
            f"'{ctx.get('pattern')}'.",
            param=param,
            code="invalid_value",
        )
    if kind == "string_too_long":
        return InvalidRequestError(
            f"Invalid '{param}': string too long. Expected a string with maximum length {ctx.get('max_length')}, "
            f"but got a string with length {len(value) if isinstance(value, str) else '?'} instead.",
            param=param,
            code="string_above_max_length",
        )
    if kind == "literal_error":
        return InvalidRequestError(
            f"Invalid value for '{param}': {_quote(value)}. Supported values are: {ctx.get('expected', '')}.",
            param=param,
            code="invalid_value",
        )
    return InvalidRequestError(f"Invalid value for '{param}'.", param=param, code="invalid_value")


def _quote(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else json.dumps(value)


def _lookup(raw: Any, loc: Sequence[int | str]) -> Any:
    node = raw
    for part in loc:
        if isinstance(part, str) and _is_tag(part):
            continue
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def check_semantics(req: ChatCompletionRequest) -> None:
    """Rules OpenAI enforces that types alone cannot express."""
    for i, message in enumerate(req.messages):
        _check_message(message, f"messages[{i}]")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequestError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    if req.top_logprobs is not None and req.top_logprobs > 0 and not req.logprobs:
        raise InvalidRequestError(
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
            param="top_logprobs",
            code="invalid_value",
        )
    _check_tools(req)
    _check_tool_messages(req)
    if req.logit_bias:
        for key in req.logit_bias:
            if not _TOKEN_ID.fullmatch(key):
                raise InvalidRequestError(
                    f"Invalid key in 'logit_bias': {key}. Keys must be token ids given as strings.",
                    param="logit_bias",
                    code="invalid_value",
                )


def _check_message(message: ChatMessage, where: str) -> None:
    role = message.role
    if role in ("system", "developer", "user", "tool", "function") and message.content is None:
        raise InvalidRequestError(
            f"Missing required parameter: '{where}.content'.",
            param=f"{where}.content",
            code="missing_required_parameter",
        )
    if role == "assistant" and message.content is None and not message.tool_calls and not message.function_call:
        raise InvalidRequestError(
            f"Missing required parameter: '{where}.content' (an assistant message needs 'content', "
            "'tool_calls' or 'function_call').",
            param=f"{where}.content",
            code="missing_required_parameter",
        )
    if role == "tool" and not message.tool_call_id:
        raise InvalidRequestError(
            f"Missing required parameter: '{where}.tool_call_id'.",
            param=f"{where}.tool_call_id",
            code="missing_required_parameter",
        )
    if role == "function" and not message.name:
        raise InvalidRequestError(
            f"Missing required parameter: '{where}.name'.", param=f"{where}.name", code="missing_required_parameter"
        )
    for j, call in enumerate(message.tool_calls or []):
        _check_call(call.get("function"), f"{where}.tool_calls[{j}].function", required=call.get("type") != "custom")
    if message.function_call is not None:
        _check_call(message.function_call, f"{where}.function_call", required=True)
    if isinstance(message.content, list):
        for j, part in enumerate(message.content):
            if part.type == "text" and part.text is None:
                raise InvalidRequestError(
                    f"Missing required parameter: '{where}.content[{j}].text'.",
                    param=f"{where}.content[{j}].text",
                    code="missing_required_parameter",
                )


def _check_call(function: Any, where: str, *, required: bool) -> None:
    """An assistant's earlier call: ``function`` an object whose ``name`` and ``arguments`` are strings."""
    if function is None:
        if required:
            raise InvalidRequestError(
                f"Missing required parameter: '{where}'.", param=where, code="missing_required_parameter"
            )
        return
    if not isinstance(function, dict):
        raise InvalidRequestError(
            f"Invalid type for '{where}': expected an object, but got {_kind(function)} instead.",
            param=where,
            code="invalid_type",
        )
    for field in ("name", "arguments"):
        value = function.get(field)
        if value is not None and not isinstance(value, str):
            raise InvalidRequestError(
                f"Invalid type for '{where}.{field}': expected a string, but got {_kind(value)} instead.",
                param=f"{where}.{field}",
                code="invalid_type",
            )


def _check_tools(req: ChatCompletionRequest) -> None:
    names = {t.function.name for t in req.tools or [] if t.function is not None}
    for i, tool in enumerate(req.tools or []):
        if tool.type == "function" and tool.function is None:
            raise InvalidRequestError(
                f"Missing required parameter: 'tools[{i}].function'.",
                param=f"tools[{i}].function",
                code="missing_required_parameter",
            )
    choice = req.tool_choice
    if choice is not None and choice != "none" and not req.tools:
        raise InvalidRequestError(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
            param="tool_choice",
            code="invalid_value",
        )
    if not isinstance(choice, str) and choice is not None and choice.type == "function":
        if choice.function is None:
            raise InvalidRequestError(
                "Missing required parameter: 'tool_choice.function'.",
                param="tool_choice.function",
                code="missing_required_parameter",
            )
        if choice.function.name not in names:
            raise InvalidRequestError(
                f"Invalid value for 'tool_choice': function '{choice.function.name}' is not one of the tools.",
                param="tool_choice",
                code="invalid_value",
            )
    fc = req.function_call
    if fc is not None and fc != "none" and not req.functions:
        raise InvalidRequestError(
            "Invalid value for 'function_call': 'function_call' is only allowed when 'functions' are specified.",
            param="function_call",
            code="invalid_value",
        )
    if not isinstance(fc, str) and fc is not None and fc.name not in {f.name for f in req.functions or []}:
        raise InvalidRequestError(
            f"Invalid value for 'function_call': function '{fc.name}' is not one of the functions.",
            param="function_call",
            code="invalid_value",
        )
    if req.tools and req.functions:
        raise InvalidRequestError(
            "'tools' and the deprecated 'functions' cannot be used together.", param="functions", code="invalid_value"
        )
    rf = req.response_format
    if rf is not None and rf.type == "json_schema" and (rf.json_schema is None or rf.json_schema.schema_ is None):
        raise InvalidRequestError(
            "Missing required parameter: 'response_format.json_schema.schema'.",
            param="response_format.json_schema",
            code="missing_required_parameter",
        )


def _check_tool_messages(req: ChatCompletionRequest) -> None:
    """OpenAI's ordering rules: tool replies answer the assistant's calls, each of them."""
    pending: set[str] = set()
    pending_at = 0
    for i, message in enumerate(req.messages):
        if message.role == "tool":
            if message.tool_call_id not in pending:
                raise InvalidRequestError(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceding message "
                    "with 'tool_calls'.",
                    param=f"messages[{i}].role",
                    code=None,
                )
            pending.discard(message.tool_call_id)
            continue
        if pending:
            raise _unanswered(pending_at, pending)
        if message.role == "assistant" and message.tool_calls:
            pending = {str(call.get("id")) for call in message.tool_calls}
            pending_at = i
    if pending:
        raise _unanswered(pending_at, pending)


def _unanswered(index: int, ids: set[str]) -> InvalidRequestError:
    return InvalidRequestError(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(sorted(ids))}",
        param=f"messages[{index}].role",
        code=None,
    )
