"""Size limits on a request body, checked before it is parsed or validated, each in linear time.

:func:`check_depth` looks at the raw bytes (no recursion, no parse); :func:`check_chat` and
:func:`check_metadata` look at the decoded JSON before pydantic does, so that a request with
100,000 messages or a 5 MB metadata value is refused before any model is built from it.
Every refusal is OpenAI's 400 with ``param`` and ``code``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from chatgate.config import LimitsConfig
from chatgate.errors import InvalidRequestError

_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")
_NOT_TEXT = frozenset({"image_url", "input_audio", "file", "audio", "role", "type"})
"""Keys of a message whose strings are not its text: media (base64 data, bounded by the body size
alone) and the words that say what a message or part is."""
T = TypeVar("T")
LARGE_BODY = 256 * 1024
"""Bodies from this size on are parsed (and their prompts rendered) off the event loop."""


async def sized(work: Callable[[], T], size: int) -> T:
    """``work()``, on a worker thread when the request's ``size`` in bytes makes it long enough to
    hold up the event loop (parsing a body, rendering its prompt); inline otherwise (cheaper)."""
    if size < LARGE_BODY:
        return work()
    return await asyncio.to_thread(work)


def json_depth(body: bytes) -> int:
    """How deeply ``body`` nests arrays and objects (brackets inside strings do not count)."""
    if body.count(b"[") + body.count(b"{") <= 1:
        return body.count(b"[") + body.count(b"{")
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    steps = np.frombuffer(brackets.translate(_STEPS), dtype=np.int8)
    return int(np.cumsum(steps, dtype=np.int32).max())


def check_depth(body: bytes, limits: LimitsConfig) -> None:
    """400 when ``body`` nests deeper than ``limits.max_json_depth`` (cheap when it cannot)."""
    if body.count(b"[") + body.count(b"{") <= limits.max_json_depth:
        return
    depth = json_depth(body)
    if depth > limits.max_json_depth:
        raise InvalidRequestError(
            f"Invalid JSON body: arrays and objects nested {depth} levels deep; the limit is {limits.max_json_depth}.",
            code="json_too_deep",
        )


def check_chat(raw: dict[str, Any], limits: LimitsConfig) -> None:
    """The sizes of a chat request, on its decoded JSON, before validation."""
    messages = raw.get("messages")
    if isinstance(messages, list):
        if len(messages) > limits.max_messages:
            raise _over("array", "messages", limits.max_messages, len(messages))
        total = 0
        for i, message in enumerate(messages):
            size = _text_size(message)
            if size > limits.max_message_chars:
                raise InvalidRequestError(
                    f"Invalid 'messages[{i}]': the message holds {size} characters of text; the limit is "
                    f"{limits.max_message_chars}.",
                    param=f"messages[{i}]",
                    code="string_above_max_length",
                )
            total += size
        if total > limits.max_total_chars:
            raise InvalidRequestError(
                f"Invalid 'messages': the messages hold {total} characters of text together; the limit is "
                f"{limits.max_total_chars}.",
                param="messages",
                code="string_above_max_length",
            )
    for name in ("tools", "functions"):
        value = raw.get(name)
        if isinstance(value, list) and len(value) > limits.max_tools:
            raise _over("array", name, limits.max_tools, len(value))
    stop = raw.get("stop")
    if isinstance(stop, list) and len(stop) > limits.max_stop:
        raise _over("array", "stop", limits.max_stop, len(stop))
    bias = raw.get("logit_bias")
    if isinstance(bias, dict) and len(bias) > limits.max_logit_bias:
        raise _over("object", "logit_bias", limits.max_logit_bias, len(bias))
    check_metadata(raw.get("metadata"), limits)
    _check_strings({k: v for k, v in raw.items() if k != "messages"}, limits)


def check_metadata(metadata: Any, limits: LimitsConfig, param: str = "metadata") -> None:
    """OpenAI's bounds on ``metadata``: 16 pairs, keys up to 64 characters, values up to 512 (a value
    that is not a string counts as its JSON text)."""
    if not isinstance(metadata, dict):
        return
    if len(metadata) > limits.max_metadata_pairs:
        raise _over("object", param, limits.max_metadata_pairs, len(metadata))
    for key, value in metadata.items():
        if len(key) > limits.max_metadata_key_chars:
            raise _over("string", f"{param}.{key[:64]}", limits.max_metadata_key_chars, len(key))
        size = len(value) if isinstance(value, str) else len(json.dumps(value))
        if size > limits.max_metadata_value_chars:
            raise _over("string", f"{param}.{key}", limits.max_metadata_value_chars, size)


def _text_size(message: Any) -> int:
    """Characters in the strings of one message, media data left out; iterative, not recursive."""
    size = 0
    stack = [message]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            size += len(node)
        elif isinstance(node, dict):
            stack.extend(v for k, v in node.items() if k not in _NOT_TEXT)
        elif isinstance(node, list):
            stack.extend(node)
    return size


def _check_strings(tree: dict[str, Any], limits: LimitsConfig) -> None:
    """Every string (keys included) outside the messages within ``max_string_chars``: a quick pass over
    the values, then, only when one is too long, a second one that names it."""
    if _longest(tree) <= limits.max_string_chars:
        return
    stack: list[tuple[str, Any]] = list(tree.items())
    while stack:
        where, node = stack.pop()
        if isinstance(node, str) and len(node) > limits.max_string_chars:
            raise _over("string", where, limits.max_string_chars, len(node))
        if isinstance(node, dict):
            stack.extend((f"{where}.{key}", value) for key, value in node.items())
            if any(len(key) > limits.max_string_chars for key in node):
                raise _over("string", where, limits.max_string_chars, max(len(key) for key in node))
        elif isinstance(node, list):
            stack.extend((f"{where}[{i}]", value) for i, value in enumerate(node))


def _longest(tree: Any) -> int:
    """The length of the longest string (or key) in ``tree``; iterative, not recursive."""
    longest = 0
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            longest = max(longest, len(node))
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return longest


_OVER = {
    # kind: (what it is, what is too many, the noun of its size, OpenAI's code)
    "array": ("array too long", "an array with maximum length", "an array with length", "array_above_max_length"),
    "string": ("string too long", "a string with maximum length", "a string with length", "string_above_max_length"),
    "object": ("too many properties", "an object with at most", "an object with", "object_above_max_properties"),
}


def _over(kind: str, param: str, limit: int, got: int) -> InvalidRequestError:
    """OpenAI's 400 for an array, string or object (properties) past its limit, in OpenAI's words."""
    what, expected, found, code = _OVER[kind]
    unit = " properties" if kind == "object" else ""
    return InvalidRequestError(
        f"Invalid '{param}': {what}. Expected {expected} {limit}{unit}, but got {found} {got}{unit} instead.",
        param=param,
        code=code,
    )
