"""response_format: JSON mode and JSON schemas, guaranteed valid by the grammar, with the SDK."""

from __future__ import annotations

import enum
import json
from typing import Annotated, Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, EmailStr, Field, conint

from tests.schemas import SCHEMAS

ASK = [{"role": "user", "content": "Fill in the JSON."}]


def create(client: openai.OpenAI, **kwargs: Any) -> Any:
    args: dict[str, Any] = {"model": "gpt-4", "messages": ASK, "temperature": 0, "max_tokens": 300}
    return client.chat.completions.create(**{**args, **kwargs})


class Color(enum.StrEnum):
    RED = "red"
    GREEN = "green"


# Strings and lists are bounded: a 135M model left free tends to ramble inside a string until
# max_tokens, and a completion cut by max_tokens is (as with OpenAI) not valid JSON.
Short = Annotated[str, Field(max_length=40)]


class Address(BaseModel):
    street: Short
    zip_code: Short | None


class Person(BaseModel):
    name: Short
    age: int
    favourite: Color
    addresses: Annotated[list[Address], Field(max_length=2)]


class Step(BaseModel):
    explanation: Short
    output: Short


class MathReasoning(BaseModel):
    steps: Annotated[list[Step], Field(max_length=3)]
    final_answer: Short


class Event(BaseModel):
    name: Short
    date: Short
    participants: Annotated[list[Short], Field(max_length=3)]


@pytest.mark.parametrize("model", [Person, MathReasoning, Event, Address])
def test_sdk_parse_returns_validated_objects(client: openai.OpenAI, model: type[BaseModel]) -> None:
    r = client.chat.completions.parse(
        model="gpt-4", messages=[{"role": "user", "content": "Answer in JSON."}], response_format=model,
        temperature=0, max_tokens=400,
    )  # fmt: skip
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, model)


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_every_output_validates_against_its_schema(client: openai.OpenAI, index: int) -> None:
    schema = SCHEMAS[index]
    fmt: Any = {"type": "json_schema", "json_schema": {"name": f"schema_{index}", "schema": schema, "strict": True}}
    r = create(client, response_format=fmt)
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    jsonschema.validate(json.loads(choice.message.content or ""), schema)


def test_sampled_outputs_validate_too(client: openai.OpenAI) -> None:
    schema = SCHEMAS[11]
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "user", "schema": schema}}
    for seed in range(5):
        r = create(client, response_format=fmt, temperature=1.0, seed=seed)
        if r.choices[0].finish_reason == "stop":
            jsonschema.validate(json.loads(r.choices[0].message.content or ""), schema)


def test_json_mode_gives_one_json_object(client: openai.OpenAI) -> None:
    r = create(client, messages=[{"role": "user", "content": "Describe a cat as json with two keys."}],
               response_format={"type": "json_object"})  # fmt: skip
    content = r.choices[0].message.content or ""
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    assert content.lstrip().startswith("{")


def test_json_mode_needs_the_word_json_in_the_messages(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        create(
            client, messages=[{"role": "user", "content": "Describe a cat."}], response_format={"type": "json_object"}
        )
    assert err.value.body["param"] == "messages"  # type: ignore[index]
    assert "json" in err.value.message


def test_streamed_json_equals_non_streamed(client: openai.OpenAI) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMAS[4]}}
    plain = create(client, response_format=fmt).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in create(client, response_format=fmt, stream=True)
                       if c.choices)  # fmt: skip
    assert streamed == plain


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ({"type": "object", "properties": {"x": {"type": "array", "uniqueItems": True}}}, "uniqueItems"),
        ({"type": "object", "properties": {"x": {"not": {"type": "string"}}}}, "not"),
        ({"type": "object", "patternProperties": {"^a": {"type": "string"}}}, "patternProperties"),
        ({"type": "object", "properties": {"e": {"type": "string", "format": "uri"}}}, "uri"),
        ({"$ref": "https://example.com/schema.json"}, "local references"),
        ({"type": "thing"}, "not a JSON schema type"),
    ],
)
def test_unsupported_schema_keywords_get_a_400(client: openai.OpenAI, schema: dict[str, Any], why: str) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    with pytest.raises(openai.BadRequestError) as err:
        create(client, response_format=fmt)
    assert err.value.body["param"] == "response_format"  # type: ignore[index]
    assert why in err.value.message


def test_json_schema_without_a_schema_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        create(client, response_format={"type": "json_schema", "json_schema": {"name": "x"}})
    assert err.value.body["param"] == "response_format.json_schema"  # type: ignore[index]


# Schemas that crashed, wedged or exhausted the server under llama.cpp's grammar sampler (issue 11).
BOMBS: list[tuple[dict[str, Any], str]] = [
    ({"type": "string", "pattern": "^a{0,20000}$"}, "pattern"),
    ({"type": "string", "pattern": "^((a{0,50}){0,50}){0,50}$"}, "pattern"),
    ({"type": "array", "maxItems": 1000000000}, "maxItems"),
    ({"type": "string", "maxLength": 1e9}, "maxLength"),
    ({"enum": list(range(100_000))}, "bytes"),
    ({"enum": list(range(2_000))}, "enum"),
    ({"type": "string", "minLength": 100_000}, "minLength"),
    ({"type": "string", "pattern": "x" * 5_000}, "pattern"),
]
UNSATISFIABLE: list[tuple[dict[str, Any], str]] = [
    ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
    ({"type": "array", "minItems": 3, "maxItems": 1}, "minItems"),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "incompatible types"),
    ({"type": "string", "pattern": "^[b-a]$"}, "pattern"),
    ({"type": "integer", "minimum": 5, "maximum": 3}, "minimum"),
    ({"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]}, "no JSON document"),
]


def fmt_of(schema: dict[str, Any]) -> Any:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}


def assert_serving(client: openai.OpenAI, http: httpx.Client) -> None:
    assert http.get("/health").status_code == 200
    r = create(client, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4)
    assert r.choices[0].message.content is not None


@pytest.mark.parametrize(("schema", "word"), BOMBS + UNSATISFIABLE)
def test_bombs_and_unsatisfiable_schemas_get_a_400_naming_the_keyword(
    client: openai.OpenAI, http: httpx.Client, schema: dict[str, Any], word: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        create(client, response_format=fmt_of(schema), max_tokens=4)
    assert err.value.body["param"] == "response_format"  # type: ignore[index]
    assert err.value.body["code"] == "invalid_json_schema"  # type: ignore[index]
    assert word in err.value.message
    assert_serving(client, http)


def test_a_bomb_in_a_tool_names_the_tool(client: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
                  {"type": "function", "function": {"name": "g", "parameters": BOMBS[2][0]}}]  # fmt: skip
    with pytest.raises(openai.BadRequestError) as err:
        create(client, messages=[{"role": "user", "content": "Call g."}], tools=tools, tool_choice="required")
    assert err.value.body["param"] == "tools[1].function.parameters"  # type: ignore[index]
    assert "maxItems" in err.value.message


@pytest.mark.parametrize(
    "schema",
    [
        {"enum": [{"\u0016": 1}]},
        {"type": "string", "pattern": "^((a{0,10}){0,10}){0,10}$"},
        {"type": "object", "properties": {"a": {"$ref": "#"}}},
    ],
)
def test_schemas_that_crashed_the_old_sampler_answer_cleanly(
    client: openai.OpenAI, http: httpx.Client, schema: dict[str, Any]
) -> None:
    for seed in range(3):
        r = create(client, response_format=fmt_of(schema), max_tokens=4, temperature=1.0, seed=seed)
        choice = r.choices[0]
        assert r.usage is not None and r.usage.completion_tokens <= 4
        if choice.finish_reason == "stop":
            jsonschema.validate(json.loads(choice.message.content or ""), schema)
    assert_serving(client, http)


def test_the_json_mode_example_always_parses_even_when_cut(client: openai.OpenAI) -> None:
    """The documentation's example at default temperature: cut by max_tokens or not, it parses."""
    reasons = set()
    for seed in range(20):
        r = client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "List 3 colors with hex codes in JSON."}],
            response_format={"type": "json_object"}, max_tokens=200, seed=seed,
        )  # fmt: skip
        choice = r.choices[0]
        reasons.add(choice.finish_reason)
        assert r.usage is not None and r.usage.completion_tokens <= 200
        assert isinstance(json.loads(choice.message.content or ""), dict), (seed, choice.message.content)
    assert reasons <= {"stop", "length"}


@pytest.mark.parametrize("max_tokens", [40, 56])
def test_a_tight_max_tokens_still_validates_against_a_strict_schema(client: openai.OpenAI, max_tokens: int) -> None:
    schema = SCHEMAS[11]  # nested objects, every key required
    for seed in range(4):
        r = create(client, response_format=fmt_of(schema), max_tokens=max_tokens, temperature=1.0, seed=seed)
        choice = r.choices[0]
        assert r.usage is not None and r.usage.completion_tokens <= max_tokens
        jsonschema.validate(json.loads(choice.message.content or ""), schema)


class Bounded(BaseModel):
    age: Annotated[int, Field(ge=18, le=99)]
    score: conint(ge=-5, lt=5)  # type: ignore[valid-type]
    email: EmailStr
    ratio: Annotated[float, Field(gt=0, le=1)]


def test_sdk_parse_with_pydantic_bounds_and_emails(client: openai.OpenAI) -> None:
    schema = Bounded.model_json_schema()
    for seed in range(4):
        r = client.chat.completions.parse(
            model="gpt-4", messages=[{"role": "user", "content": "Invent a user, in JSON."}], response_format=Bounded,
            max_tokens=300, temperature=1.0, seed=seed,
        )  # fmt: skip
        choice = r.choices[0]
        jsonschema.validate(json.loads(choice.message.content or ""), schema)
        assert isinstance(choice.message.parsed, Bounded)
