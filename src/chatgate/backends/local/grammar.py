"""Constrained decoding: JSON schemas and tool calls as llama.cpp grammars (GBNF).

The conversion from JSON schema to GBNF is llama.cpp's own (the Python port shipped with
llama-cpp-python); chatgate checks the schema first, so a keyword the converter would silently
ignore is refused with a 400 instead of producing output that does not validate. Grammars are
compiled once by llama.cpp's grammar sampler and cached; each sequence samples with a clone.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import llama_cpp
from llama_cpp.llama_grammar import SchemaConverter

from chatgate.errors import InvalidRequestError

# Strings may not hold raw control characters (JSON forbids them; the port's rule allows them).
CHAR_RULE = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'

ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
               "readOnly", "writeOnly"}  # fmt: skip
SUPPORTED = ANNOTATIONS | {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
    "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "pattern", "format",
    "minLength", "maxLength",
}  # fmt: skip
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems")
FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}

TOOL_OPEN = "<tool_call>\n"
TOOL_CLOSE = "\n</tool_call>"


def check_schema(schema: Any, where: str, path: str = "#") -> None:
    """Refuse (400, ``param=where``) any schema the grammar converter cannot honour exactly."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise _unsupported(where, path, "a schema must be an object")
    for key, value in schema.items():
        if key not in SUPPORTED:
            raise _unsupported(where, path, f"keyword '{key}' is not supported")
        if key in ("properties", "$defs", "definitions"):
            _each(value, where, f"{path}/{key}", named=True)
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            _each(value, where, f"{path}/{key}", named=False)
        elif key in ("items", "additionalProperties") and not isinstance(value, bool):
            check_schema(value, where, f"{path}/{key}")
        elif key == "$ref" and not (isinstance(value, str) and value.startswith("#/")):
            raise _unsupported(where, path, "only local references ('#/...') are supported")
        elif key == "format" and not (isinstance(value, str) and value in FORMATS):
            raise _unsupported(where, path, f"format '{value}' is not supported")
        elif key == "pattern" and not isinstance(value, str):
            raise _unsupported(where, path, f"'pattern' must be a string, not {json.dumps(value)[:40]}")
        elif key in _COUNTS and not (type(value) is int and value >= 0):
            raise _unsupported(where, path, f"'{key}' must be a non-negative integer, not {json.dumps(value)[:40]}")
        elif key == "required" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise _unsupported(where, path, "'required' must be an array of strings")
        elif key == "enum" and not isinstance(value, list):
            raise _unsupported(where, path, "'enum' must be an array")
        elif key == "type":
            types = value if isinstance(value, list) else [value]
            if not types or any(not isinstance(t, str) or t not in TYPES for t in types):
                raise _unsupported(where, path, f"type {json.dumps(value)} is not a JSON schema type")


def _each(value: Any, where: str, path: str, *, named: bool) -> None:
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
        check_schema(sub, where, f"{path}/{name}")


def _unsupported(where: str, path: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid schema for '{where}' at {path}: {why}. Supported keywords: {', '.join(sorted(SUPPORTED))}.",
        param=where,
        code="invalid_json_schema",
    )


def _converter() -> SchemaConverter:
    return SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def _visit(converter: SchemaConverter, schema: Any, name: str, url: str, where: str) -> str:
    try:
        resolved = converter.resolve_refs(json.loads(json.dumps(schema)), url)
        rule: str = converter.visit(resolved, name)
    except (AssertionError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        # the converter's own way of saying a schema is not one it handles (e.g. `true` as a property)
        raise InvalidRequestError(
            f"Invalid schema for '{where}': {exc}", param=where, code="invalid_json_schema"
        ) from None
    return rule


def _format(converter: SchemaConverter) -> str:
    if "char" in converter._rules:
        converter._rules["char"] = CHAR_RULE
    text: str = converter.format_grammar()
    return text


def schema_grammar(schema: Any, where: str = "response_format") -> str:
    """GBNF accepting exactly the JSON documents that ``schema`` describes."""
    check_schema(schema, where)
    converter = _converter()
    _visit(converter, schema, "", "schema", where)
    return _format(converter)


def json_object_grammar() -> str:
    """GBNF for any JSON object (``response_format: json_object``)."""
    return schema_grammar({"type": "object"})


@dataclass(frozen=True)
class ToolSpec:
    name: str
    parameters: dict[str, Any]


def tools_grammar(tools: list[ToolSpec], *, allow_content: bool, parallel: bool) -> str:
    """GBNF for one tool call (or several, when ``parallel``), or free text when ``allow_content``.

    A call is ``<tool_call>\\n{"name": "NAME", "arguments": ARGS}\\n</tool_call>`` with ARGS valid
    against the tool's parameter schema; free text may not start with ``<``.
    """
    converter = _converter()
    alternatives = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}].function.parameters"
        check_schema(tool.parameters, where)
        args = _visit(converter, tool.parameters, f"{_rule_name(tool.name)}-args", f"tool{i}", where)
        alternatives.append(f'"\\"{tool.name}\\", \\"arguments\\": " {args}')
    converter._rules["tool-call"] = " | ".join(alternatives)
    converter._rules["call-block"] = '"<tool_call>\\n{\\"name\\": " tool-call "}\\n</tool_call>"'
    converter._rules["calls"] = 'call-block ("\\n" call-block)*' if parallel else "call-block"
    if allow_content:
        converter._rules["content"] = "[^<\\x00] [^\\x00]*"
        converter._rules["root"] = "calls | content"
    else:
        converter._rules["root"] = "calls"
    return _format(converter)


def _rule_name(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name) or "tool"


class GrammarCache:
    """Compiled llama.cpp grammar samplers by GBNF text (LRU); callers clone, never use, them."""

    def __init__(self, vocab: Any, capacity: int = 256) -> None:
        self._vocab = vocab
        self._capacity = capacity
        self._samplers: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def compile(self, gbnf: str) -> Any:
        """The pristine sampler for ``gbnf``; a 400 if llama.cpp cannot parse it."""
        with self._lock:
            sampler = self._samplers.get(gbnf)
            if sampler is not None:
                self._samplers.move_to_end(gbnf)
                self.hits += 1
                return sampler
            self.misses += 1
            sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, gbnf.encode(), b"root")
            if not sampler:
                raise InvalidRequestError(
                    "The requested schema could not be turned into a grammar.", param="response_format",
                    code="invalid_json_schema",
                )  # fmt: skip
            self._samplers[gbnf] = sampler
            while len(self._samplers) > self._capacity:
                _, old = self._samplers.popitem(last=False)
                llama_cpp.llama_sampler_free(old)
            return sampler

    def clone(self, gbnf: str) -> Any:
        """A fresh grammar sampler for one sequence (the caller's chain takes ownership)."""
        return llama_cpp.llama_sampler_clone(self.compile(gbnf))

    def close(self) -> None:
        with self._lock:
            for sampler in self._samplers.values():
                llama_cpp.llama_sampler_free(sampler)
            self._samplers.clear()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._samplers))
