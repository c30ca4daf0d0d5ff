"""Turn a raw request body into a :class:`ChatCompletionRequest`, or raise OpenAI's 400.

Pydantic's errors are translated into OpenAI's wording and codes, with ``param`` in OpenAI's
path notation (``messages[0].role``). Rules that a type cannot express (per-role requirements,
parameters that need another one) are checked after parsing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from chatgate.errors import InvalidJSONError, InvalidRequestError
from chatgate.protocol.requests import ChatCompletionRequest, ChatMessage

_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
    "valid JSON. If you have trouble figuring out how to fix this, please contact us through our "
    "help center at help.openai.com.)"
)

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
_SIMPLE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}
_INTEGER_FIELDS = {"max_tokens", "max_completion_tokens", "n", "top_logprobs", "top_k", "seed"}


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_chat_request(body: bytes) -> ChatCompletionRequest:
    """Parse and validate a request body; raise :class:`InvalidRequestError` on any fault."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidJSONError(_BAD_JSON) from None
    if not isinstance(raw, dict):
        raise InvalidRequestError(
            f"Invalid type for request body: expected an object, but got {_kind(raw)} instead.",
            code="invalid_type",
        )
    try:
        request = ChatCompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _translate(exc.errors(include_url=False), raw) from None
    check_semantics(request)
    return request


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


def _translate(errors: list[ErrorDetails], raw: dict[str, Any]) -> InvalidRequestError:
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
    if req.logit_bias:
        for key in req.logit_bias:
            if not key.lstrip("-").isdigit():
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
    if isinstance(message.content, list):
        for j, part in enumerate(message.content):
            if part.type == "text" and part.text is None:
                raise InvalidRequestError(
                    f"Missing required parameter: '{where}.content[{j}].text'.",
                    param=f"{where}.content[{j}].text",
                    code="missing_required_parameter",
                )
