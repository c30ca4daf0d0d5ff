"""response_format: JSON mode and JSON schemas, guaranteed valid by the grammar, with the SDK."""

from __future__ import annotations

import enum
import json
from typing import Annotated, Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

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
        ({"type": "object", "properties": {"x": {"type": "integer", "minimum": 0}}}, "minimum"),
        ({"type": "object", "properties": {"x": {"not": {"type": "string"}}}}, "not"),
        ({"type": "object", "patternProperties": {"^a": {"type": "string"}}}, "patternProperties"),
        ({"type": "object", "properties": {"e": {"type": "string", "format": "email"}}}, "email"),
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
