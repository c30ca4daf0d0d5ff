"""Constrained decoding: JSON schemas and tool calls as llguidance grammars.

chatgate checks each schema first (the keywords OpenAI's structured outputs accept, within the
bounds of :mod:`schemabounds`), so a keyword llguidance would silently ignore is refused with a 400
instead of producing output that does not validate. llguidance turns the schema into a lazy
lexer/Earley grammar: counted repetition, number ranges and formats cost nothing up front.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import llguidance

from chatgate.backends.local.schemabounds import check_document, check_keyword, schema_error
from chatgate.config import StructuredOutputConfig
from chatgate.errors import InvalidRequestError

ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
}
SUPPORTED = ANNOTATIONS | {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "$defs",
    "definitions",
    "pattern",
    "format",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
}
FORMATS = {"date", "time", "date-time", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}

# The layout of generated JSON: spaces and newlines where models put them, but never a run of them.
JSON_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": True,
    "whitespace_pattern": r"[ \n]{1,8}",
    "coerce_one_of": True,
}

TOOL_OPEN = "<tool_call>\n"
TOOL_CLOSE = "\n</tool_call>"


def check_schema(schema: Any, where: str, limits: StructuredOutputConfig | None = None) -> None:
    """Refuse (400, ``param=where``) a schema past a bound or one the grammar cannot honour exactly."""
    limits = limits or StructuredOutputConfig()
    check_document(schema, where, limits)
    _check_node(schema, where, "#", limits)


def _check_node(schema: Any, where: str, path: str, limits: StructuredOutputConfig) -> None:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise _unsupported(where, path, "a schema must be an object")
    for key, value in schema.items():
        if key not in SUPPORTED:
            raise _unsupported(where, path, f"keyword '{key}' is not supported")
        check_keyword(key, value, where, path, limits)
        if key in ("properties", "$defs", "definitions"):
            _each(value, where, f"{path}/{key}", limits, named=True)
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            _each(value, where, f"{path}/{key}", limits, named=False)
        elif key in ("items", "additionalProperties") and not isinstance(value, bool):
            _check_node(value, where, f"{path}/{key}", limits)
        elif key == "$ref" and not (isinstance(value, str) and value.startswith("#")):
            raise _unsupported(where, path, "only local references ('#/...') are supported")
        elif key == "format" and not (isinstance(value, str) and value in FORMATS):
            raise _unsupported(
                where, path, f"format '{value}' is not supported (supported: {', '.join(sorted(FORMATS))})"
            )
        elif key == "type":
            types = value if isinstance(value, list) else [value]
            if not types or any(not isinstance(t, str) or t not in TYPES for t in types):
                raise _unsupported(where, path, f"type {json.dumps(value)} is not a JSON schema type")
        elif key == "required" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise _unsupported(where, path, "'required' must be an array of property names")


def _each(value: Any, where: str, path: str, limits: StructuredOutputConfig, *, named: bool) -> None:
    items: Iterable[tuple[str, Any]]
    if named:
        if not isinstance(value, dict):
            raise _unsupported(where, path, "expected an object of schemas")
        items = value.items()
    else:
        if not isinstance(value, list):
            raise _unsupported(where, path, "expected an array of schemas")
        items = ((str(i), v) for i, v in enumerate(value))
    for name, sub in items:
        _check_node(sub, where, f"{path}/{name}", limits)


def _unsupported(where: str, path: str, why: str) -> InvalidRequestError:
    error = schema_error(where, path, why)
    error.message += f" Supported keywords: {', '.join(sorted(SUPPORTED))}."
    return error


@dataclass(frozen=True)
class GrammarSpec:
    """A grammar to compile: llguidance's text for it, and the request field it came from."""

    text: str
    where: str
    parts: tuple[GrammarSpec, ...] = ()
    """Grammars checked on their own first (each tool's arguments), so an error names its tool."""


def schema_grammar(
    schema: Any, where: str = "response_format", limits: StructuredOutputConfig | None = None
) -> GrammarSpec:
    """The grammar accepting exactly the JSON documents that ``schema`` describes."""
    check_schema(schema, where, limits)
    try:
        text = llguidance.LLMatcher.grammar_from_json_schema(_canonical(_prepared(schema)), overrides=JSON_OPTIONS)  # type: ignore[arg-type]
    except ValueError as exc:
        raise schema_error(where, "#", str(exc).splitlines()[0]) from None
    return GrammarSpec(text, where)


def json_object_grammar() -> GrammarSpec:
    """Any JSON object (``response_format: json_object``)."""
    return schema_grammar({"type": "object"})


SAFE_INTEGER = 2**53 - 1
DATA_KEYWORDS = ("enum", "const", "default", "examples")
NAMED_SCHEMAS = ("properties", "$defs", "definitions")
# llguidance's own email format accepts "a@b"; this one asks for what mail validators
# (pydantic's EmailStr) accept: dot-separated atoms, a dotted domain, a letters-only top level.
EMAIL = r"^[A-Za-z0-9_%+-]+(\.[A-Za-z0-9_%+-]+)*@([A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?\.)+[A-Za-z]{2,12}$"


def _prepared(schema: Any, *, in_all_of: bool = False) -> Any:
    """``schema`` as chatgate enforces it: integers lacking a bound held to +-(2^53 - 1) (the range
    every JSON parser represents exactly, and a bound on their digits), ``additionalProperties``
    false where an object lists its properties and says nothing (OpenAI's strict mode; not inside
    ``allOf``, whose branches each name some of the properties), emails by :data:`EMAIL`."""
    if isinstance(schema, list):
        return [_prepared(item, in_all_of=in_all_of) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in DATA_KEYWORDS:
            out[key] = value
        elif key in NAMED_SCHEMAS and isinstance(value, dict):
            out[key] = {name: _prepared(sub) for name, sub in value.items()}
        else:
            out[key] = _prepared(value, in_all_of=key == "allOf")
    types = out.get("type")
    if types == "integer" or (isinstance(types, list) and "integer" in types and "number" not in types):
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = -SAFE_INTEGER
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = SAFE_INTEGER
    out = _merged_all_of(out)
    if "properties" in out and "additionalProperties" not in out and not in_all_of:
        out["additionalProperties"] = False
    if out.get("format") == "email" and "pattern" not in out:
        del out["format"]
        out["pattern"] = EMAIL
    return out


MERGEABLE = {"type", "properties", "required", "title", "description"}


def _merged_all_of(node: dict[str, Any]) -> dict[str, Any]:
    """``allOf`` of plain object schemas (properties and required, nothing else) as one object,
    so that the default ``additionalProperties: false`` applies to the whole."""
    branches = node.get("allOf")
    if not isinstance(branches, list) or not branches or set(node) - {"allOf", "type", "title", "description"}:
        return node
    if not all(isinstance(b, dict) and set(b) <= MERGEABLE and b.get("type", "object") == "object" for b in branches):
        return node
    properties: dict[str, Any] = {}
    required: list[str] = []
    for branch in branches:
        for name, sub in branch.get("properties", {}).items():
            if name in properties and properties[name] != sub:
                return node  # the same property constrained twice: leave the intersection to llguidance
            properties[name] = sub
        required += [r for r in branch.get("required", []) if r not in required]
    merged = {k: v for k, v in node.items() if k != "allOf"}
    return {**merged, "type": "object", "properties": properties, "required": required}


def _canonical(schema: Any) -> str:
    """Compact JSON; keys keep their order (properties are generated in the order the schema lists them)."""
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    parameters: dict[str, Any]


def tools_grammar(
    tools: list[ToolSpec], *, allow_content: bool, parallel: bool, limits: StructuredOutputConfig | None = None
) -> GrammarSpec:
    """One tool call (or several, when ``parallel``), or free text when ``allow_content``.

    A call is ``<tool_call>\\n{"name": "NAME", "arguments": ARGS}\\n</tool_call>`` with ARGS valid
    against the tool's parameter schema; free text may not start with ``<``.
    """
    rules = []
    alternatives = []
    parts = tuple(schema_grammar(t.parameters, f"tools[{i}].function.parameters", limits) for i, t in enumerate(tools))
    for i, tool in enumerate(tools):
        schema = {**tool.parameters, "x-guidance": JSON_OPTIONS}
        head = json.dumps(f'{json.dumps(tool.name)}, "arguments": ')
        rules.append(f"call_{i}: {head} args_{i}\nargs_{i}: %json {_canonical(schema)}")
        alternatives.append(f"call_{i}")
    block = f'{json.dumps(TOOL_OPEN + "{" + json.dumps("name") + ": ")} tool "}}" {json.dumps(TOOL_CLOSE)}'
    lines = [
        "start: calls | content" if allow_content else "start: calls",
        'calls: block ("\\n" block)*' if parallel else "calls: block",
        f"block: {block}",
        f"tool: {' | '.join(alternatives)}",
        *rules,
    ]
    if allow_content:
        lines.append("content: /[^<\\x00](?s:.)*/")
    return GrammarSpec(llguidance.LLMatcher.grammar_from_lark("\n".join(lines)), "tools", parts)
