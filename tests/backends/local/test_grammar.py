"""Schema checks, grammar building and the compiled-grammar cache."""

from __future__ import annotations

from typing import Any

import llama_cpp
import pytest

from chatgate.backends.local.grammar import (
    GrammarCache,
    ToolSpec,
    check_schema,
    json_object_grammar,
    schema_grammar,
    tools_grammar,
)
from chatgate.backends.local.llama import GGUFModel
from chatgate.errors import InvalidRequestError
from tests.schemas import SCHEMAS, TOOLS


@pytest.mark.parametrize("schema", SCHEMAS)
def test_every_test_schema_becomes_a_grammar_llama_cpp_accepts(schema: dict[str, Any], vocab: GGUFModel) -> None:
    cache = GrammarCache(vocab.vocab)
    try:
        assert cache.compile(schema_grammar(schema))
    finally:
        cache.close()


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({"type": "object", "properties": {"a": {"type": "integer", "maximum": 3}}}, "#/properties/a"),
        ({"type": "array", "items": {"uniqueItems": True}}, "#/items"),
        ({"anyOf": [{"type": "string"}, {"if": {}}]}, "#/anyOf/1"),
        ({"$defs": {"X": {"multipleOf": 2}}}, "#/$defs/X"),
    ],
)
def test_unsupported_keywords_are_refused_with_their_location(schema: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        check_schema(schema, "response_format")
    assert err.value.param == "response_format"
    assert path in err.value.message


def test_annotations_are_allowed() -> None:
    check_schema({"title": "T", "description": "d", "type": "object", "properties": {"a": {"default": 1,
                  "examples": [1], "type": "integer"}}}, "x")  # fmt: skip


def test_strings_may_not_hold_raw_control_characters() -> None:
    grammar = schema_grammar({"type": "object", "properties": {"s": {"type": "string"}}})
    assert r"\x00-\x1F" in grammar


def test_tool_grammar_names_each_tool_and_allows_content_only_in_auto() -> None:
    specs = [ToolSpec(t["name"], t["parameters"]) for t in TOOLS[:3]]
    auto = tools_grammar(specs, allow_content=True, parallel=True)
    required = tools_grammar(specs, allow_content=False, parallel=False)
    for spec in specs:
        assert f'\\"{spec.name}\\"' in auto
    assert "root ::= calls | content" in auto
    assert "root ::= calls\n" in required + "\n"
    assert "calls ::= call-block\n" in required + "\n"


def test_the_cache_compiles_once_and_clones(vocab: GGUFModel) -> None:
    cache = GrammarCache(vocab.vocab, capacity=2)
    try:
        gbnf = json_object_grammar()
        first = cache.compile(gbnf)
        assert cache.compile(gbnf) is first
        assert (cache.hits, cache.misses) == (1, 1)
        clone = cache.clone(gbnf)
        assert clone and clone != first
        llama_cpp.llama_sampler_free(clone)
        for schema in SCHEMAS[:3]:
            cache.compile(schema_grammar(schema))
        assert len(list(cache)) == 2  # least recently used evicted
    finally:
        cache.close()


def test_a_grammar_llama_cpp_rejects_is_a_400(vocab: GGUFModel) -> None:
    cache = GrammarCache(vocab.vocab)
    try:
        with pytest.raises(InvalidRequestError):
            cache.compile("root ::= undefined-rule")
    finally:
        cache.close()
