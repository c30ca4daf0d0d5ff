"""Size and repetition bounds on a JSON schema, checked before any grammar is built.

Each bound is a setting (:class:`~chatgate.config.StructuredOutputConfig`); a schema past one is a
400 ``invalid_json_schema`` whose message names the keyword and where it is.
"""

from __future__ import annotations

import json
import math
from typing import Any

from chatgate.config import StructuredOutputConfig
from chatgate.errors import InvalidRequestError

UPPER_COUNTS = ("maxLength", "maxItems", "maxProperties")
LOWER_COUNTS = ("minLength", "minItems", "minProperties")
NUMBERS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")


def schema_error(where: str, path: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid schema for '{where}' at {path}: {why}.", param=where, code="invalid_json_schema"
    )


def check_document(schema: Any, where: str, limits: StructuredOutputConfig) -> None:
    """The whole schema: its size as compact JSON and how deeply it nests."""
    try:
        size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError, RecursionError):
        raise schema_error(where, "#", "the schema is not JSON") from None
    if size > limits.max_schema_bytes:
        raise schema_error(where, "#", f"the schema is {size} bytes, more than the limit of {limits.max_schema_bytes}")
    depth = _depth(schema, limits.max_depth + 1)
    if depth > limits.max_depth:
        raise schema_error(where, "#", f"the schema nests more than {limits.max_depth} levels deep")


def _depth(value: Any, cap: int) -> int:
    """Nesting of JSON containers, counted no further than ``cap``."""
    if cap <= 0 or not isinstance(value, dict | list):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, cap - 1) for child in children), default=0)


def check_keyword(key: str, value: Any, where: str, path: str, limits: StructuredOutputConfig) -> None:
    """One keyword of one schema node: counts, enum size, numbers and patterns within their bounds."""
    if key in UPPER_COUNTS or key in LOWER_COUNTS:
        bound = limits.max_count if key in UPPER_COUNTS else limits.max_min_count
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise schema_error(where, path, f"'{key}' must be a non-negative integer")
        if value < 0 or value != int(value):
            raise schema_error(where, path, f"'{key}' must be a non-negative integer")
        if value > bound:
            raise schema_error(where, path, f"'{key}' is {int(value)}, more than the limit of {bound}")
    elif key in NUMBERS:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise schema_error(where, path, f"'{key}' must be a number")
        if key == "multipleOf" and value <= 0:
            raise schema_error(where, path, "'multipleOf' must be greater than 0")
    elif key == "enum":
        if not isinstance(value, list) or not value:
            raise schema_error(where, path, "'enum' must be a non-empty array")
        if len(value) > limits.max_enum:
            raise schema_error(where, path, f"'enum' has {len(value)} values, more than the limit of {limits.max_enum}")
    elif key == "pattern":
        if not isinstance(value, str):
            raise schema_error(where, path, "'pattern' must be a string")
        if len(value) > limits.max_pattern_length:
            raise schema_error(
                where, path, f"'pattern' is {len(value)} characters, more than the limit of {limits.max_pattern_length}"
            )
        repeat = pattern_repeat(value)
        if repeat > limits.max_pattern_repeat:
            raise schema_error(
                where,
                path,
                f"'pattern' repeats up to {repeat} times (counted repetitions "
                f"multiplied), more than the limit of {limits.max_pattern_repeat}",
            )


def pattern_repeat(pattern: str) -> int:
    """The largest product of nested counted repetitions (``{n}``, ``{n,}``, ``{n,m}``) in a regex."""
    stack = [1]  # per open group: the largest product inside it so far
    last = 1  # the product of the item just read (a group's inside, or 1 for an atom)
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i, last = i + 2, 1
            continue
        if char == "[":
            i, last = _skip_class(pattern, i), 1
            continue
        if char == "(":
            stack.append(1)
        elif char == ")" and len(stack) > 1:
            last = stack.pop()
            stack[-1] = max(stack[-1], last)
        elif char == "{":
            count, end = _quantifier(pattern, i)
            if count is not None:
                stack[-1] = max(stack[-1], last * max(count, 1))
                i = end
                continue
        else:
            last = 1
        i += 1
    return max(stack)


def _skip_class(pattern: str, i: int) -> int:
    j = i + 1
    if j < len(pattern) and pattern[j] == "^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1


def _quantifier(pattern: str, i: int) -> tuple[int | None, int]:
    """``{n}``/``{n,}``/``{n,m}`` at ``i``: its largest count and the index after it."""
    end = pattern.find("}", i)
    if end < 0:
        return None, i + 1
    parts = pattern[i + 1 : end].split(",")
    if len(parts) > 2 or not all(p.strip().isdigit() or (k == 1 and not p.strip()) for k, p in enumerate(parts)):
        return None, i + 1
    counts = [int(p) for p in parts if p.strip()]
    return max(counts), end + 1
