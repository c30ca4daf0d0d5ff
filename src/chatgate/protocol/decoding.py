"""A request body's bytes into JSON values, and what to say when they are not quite JSON.

The nesting depth is checked on the raw bytes first (Python's parser recurses); a body that Python's
parser accepts but pydantic's refuses (a byte order mark, a lone surrogate escape) gets a 400 that
names the offending string, or ``param: null``.
"""

from __future__ import annotations

import json
from typing import Any

from chatgate.config import LimitsConfig
from chatgate.errors import InvalidJSONError, InvalidRequestError
from chatgate.protocol.limits import check_depth

_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
    "valid JSON. If you have trouble figuring out how to fix this, please contact us through our "
    "help center at help.openai.com.)"
)


def decode_body(body: bytes, limits: LimitsConfig) -> Any:
    """The body's JSON, its nesting depth checked first (the parser recurses)."""
    check_depth(body, limits)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidJSONError(_BAD_JSON) from None


def unparsable(raw: dict[str, Any], body: bytes) -> InvalidRequestError:
    """What Python's JSON parser lets through and pydantic's refuses: a leading byte order mark, or a
    ``\\ud800``-style escape that leaves half a surrogate pair (not Unicode text)."""
    if body.startswith(b"\xef\xbb\xbf"):
        return InvalidJSONError(_BAD_JSON + " The body starts with a byte order mark (BOM); send UTF-8 without one.")
    where = _lone_surrogate(raw)
    param = where or None
    return InvalidRequestError(
        f"Invalid value for '{where or 'request body'}': the JSON holds a lone surrogate escape (half of a "
        "UTF-16 surrogate pair), which is not Unicode text.",
        param=param,
        code="invalid_value",
    )


def _lone_surrogate(raw: Any) -> str:
    """The path of the first string or key holding a lone surrogate (``""`` when none); iterative."""
    stack: list[tuple[str, Any]] = [("", raw)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, str) and _has_surrogate(node):
            return where
        if isinstance(node, dict):
            for key, value in node.items():
                path = f"{where}.{key}" if where else key
                if _has_surrogate(key):
                    return where
                stack.append((path, value))
        elif isinstance(node, list):
            stack.extend((f"{where}[{i}]", value) for i, value in enumerate(node))
    return ""


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
