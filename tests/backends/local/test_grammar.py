"""Schema checks and bounds, grammar building, the compiled-grammar cache and the ending search."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from chatgate.backends.local.grammar import ToolSpec, check_schema, json_object_grammar, schema_grammar, tools_grammar
from chatgate.backends.local.llama import GGUFModel, model_tokenizer
from chatgate.backends.local.matchers import GrammarCompiler
from chatgate.backends.local.schemabounds import pattern_repeat
from chatgate.config import StructuredOutputConfig
from chatgate.errors import InvalidRequestError
from tests.schemas import SCHEMAS, TOOLS
from tests.server.test_structured_output import BOMBS, UNSATISFIABLE


@pytest.fixture(scope="module")
def compiler(vocab: GGUFModel) -> Iterator[GrammarCompiler]:
    yield GrammarCompiler(model_tokenizer(vocab), StructuredOutputConfig(cache_size=4))


def shortest(compiler: GrammarCompiler, schema: Any) -> str:
    matcher = compiler.matchers(schema_grammar(schema), 1)[0]
    ending = compiler.closer.ending(matcher)
    assert ending is not None
    return compiler.tokenizer.decode_str(ending)


@pytest.mark.parametrize("schema", SCHEMAS)
def test_every_test_schema_compiles_and_its_shortest_document_validates(
    schema: dict[str, Any], compiler: GrammarCompiler
) -> None:
    jsonschema.validate(json.loads(shortest(compiler, schema)), schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": -9007199254740991, "maximum": 9007199254740991},
        {"type": "integer", "exclusiveMinimum": 3, "maximum": 7},
        {"type": "number", "multipleOf": 0.5, "minimum": 2},
        *(
            {"type": "string", "format": f}
            for f in ("email", "hostname", "ipv4", "ipv6", "duration", "uuid", "date", "time", "date-time")
        ),
    ],
)
def test_openai_keywords_compile_and_their_shortest_document_validates(
    schema: dict[str, Any], compiler: GrammarCompiler
) -> None:
    document = json.loads(shortest(compiler, schema))
    jsonschema.validate(document, schema, format_checker=jsonschema.FormatChecker(["ipv4", "ipv6", "uuid"]))


@pytest.mark.parametrize(("schema", "word"), UNSATISFIABLE)
def test_unsatisfiable_schemas_are_refused(schema: dict[str, Any], word: str, compiler: GrammarCompiler) -> None:
    with pytest.raises(InvalidRequestError) as err:
        compiler.compile(schema_grammar(schema))
    assert err.value.param == "response_format"
    assert err.value.code == "invalid_json_schema"
    assert word in err.value.message


@pytest.mark.parametrize(("schema", "word"), BOMBS)
def test_bounds_name_the_keyword(schema: dict[str, Any], word: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        check_schema(schema, "tools[2].function.parameters")
    assert err.value.param == "tools[2].function.parameters"
    assert word in err.value.message


def test_pattern_repeats_multiply_when_nested() -> None:
    assert pattern_repeat("^((a{0,50}){0,50}){0,50}$") == 125_000
    assert pattern_repeat("^[A-Z]{3}-[0-9]{2}$") == 3
    assert pattern_repeat(r"^\{5}[{]{9}(ab){4}c{2}$") == 9
    assert pattern_repeat("^a+b*$") == 1


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({"type": "array", "items": {"uniqueItems": True}}, "#/items"),
        ({"anyOf": [{"type": "string"}, {"if": {}}]}, "#/anyOf/1"),
        ({"$defs": {"X": {"not": {}}}}, "#/$defs/X"),
    ],
)
def test_unsupported_keywords_are_refused_with_their_location(schema: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        check_schema(schema, "response_format")
    assert err.value.param == "response_format"
    assert path in err.value.message


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": {}}}},
        {"type": ["string", ["x"]]},
        {"type": "string", "format": {"x": 1}},
        {"type": "string", "format": ["email"]},
        {"type": "string", "maxLength": float("inf")},
        {"type": "array", "minItems": float("nan")},
        {"type": "string", "pattern": 5},
    ],
    ids=[
        "type-object",
        "type-nested-list",
        "format-object",
        "format-list",
        "maxLength-inf",
        "minItems-nan",
        "pattern-int",
    ],
)
def test_keywords_of_the_wrong_type_are_refused(schema: dict[str, Any]) -> None:
    """Found by the fuzz test: these raised TypeError or OverflowError (a 500) instead of a 400."""
    with pytest.raises(InvalidRequestError) as err:
        check_schema(schema, "response_format")
    assert err.value.param == "response_format" and err.value.code == "invalid_json_schema"


def test_annotations_are_allowed() -> None:
    check_schema({"title": "T", "description": "d", "type": "object", "properties": {"a": {"default": 1,
                  "examples": [1], "type": "integer"}}}, "x")  # fmt: skip


def test_tool_grammar_checks_each_tools_arguments_on_their_own(compiler: GrammarCompiler) -> None:
    specs = [ToolSpec(t["name"], t["parameters"]) for t in TOOLS[:3]]
    bad = [*specs, ToolSpec("broken", {"type": "string", "minLength": 5, "maxLength": 1})]
    compiler.compile(tools_grammar(specs, allow_content=True, parallel=True))
    with pytest.raises(InvalidRequestError) as err:
        compiler.compile(tools_grammar(bad, allow_content=False, parallel=False))
    assert err.value.param == "tools[3].function.parameters"


def test_a_required_call_ends_as_a_whole_tool_call(compiler: GrammarCompiler) -> None:
    spec = tools_grammar([ToolSpec(t["name"], t["parameters"]) for t in TOOLS], allow_content=False, parallel=True)
    matcher = compiler.matchers(spec, 1)[0]
    ending = compiler.closer.ending(matcher)
    assert ending is not None
    text = compiler.tokenizer.decode_str(ending)
    assert text.startswith("<tool_call>\n") and text.endswith("\n</tool_call>")
    call = json.loads(text.removeprefix("<tool_call>\n").removesuffix("\n</tool_call>"))
    tool = next(t for t in TOOLS if t["name"] == call["name"])
    jsonschema.validate(call["arguments"], tool["parameters"])


def test_the_cache_compiles_once_and_evicts_the_least_recently_used(compiler: GrammarCompiler) -> None:
    spec = json_object_grammar()
    first = compiler.compile(spec)
    hits = compiler.hits
    assert compiler.compile(spec) is first
    assert compiler.hits == hits + 1
    # the same schema laid out another way is the same grammar
    a = schema_grammar({"type": "object", "properties": {"a": {"type": "string"}}})
    b = schema_grammar(json.loads('{"type":  "object",\n "properties": {"a": {"type": "string"}}}'))
    assert a.text == b.text
    for schema in SCHEMAS[:5]:
        compiler.compile(schema_grammar(schema))
    assert len(list(compiler)) == 4
    assert spec.text not in list(compiler)


def test_an_ending_leaves_the_matcher_as_it_was(compiler: GrammarCompiler) -> None:
    matcher = compiler.matchers(schema_grammar(SCHEMAS[4]), 1)[0]
    text = '{"name": "Al", "age": 4'
    for token in compiler.tokenizer.tokenize_str(text):
        assert matcher.consume_token(token)
    ending = compiler.closer.ending(matcher)
    assert ending is not None
    closed = json.loads(text + compiler.tokenizer.decode_str(ending))
    jsonschema.validate(closed, SCHEMAS[4])
    assert matcher.consume_tokens(compiler.tokenizer.tokenize_str(', "member": false}'))
    assert matcher.is_accepting()
