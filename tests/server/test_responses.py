"""``POST /v1/responses`` on the session server (the real model), with the official SDK's
``client.responses``: string and item input, instructions, every ``text.format``, a function-tool round
trip, logprobs, ``max_output_tokens``, and OpenAI's 400s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText
from pydantic import BaseModel

from tests.conftest import make_settings
from tests.serving import ServerThread

MODEL = "gpt-4.1-mini"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
    "strict": True,
}  # fmt: skip


def test_string_input_with_instructions(client: openai.OpenAI) -> None:
    r = client.responses.create(model=MODEL, instructions="Answer in one short sentence.", temperature=0,
                                input="What is the capital of France?", max_output_tokens=24)  # fmt: skip
    assert r.id.startswith("resp_") and r.object == "response" and r.status in ("completed", "incomplete")
    assert r.model == "smollm2-135m-instruct" and r.instructions == "Answer in one short sentence."
    [message] = r.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text" and r.output_text == message.content[0].text != ""
    assert r.usage is not None and r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 24
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    assert r.temperature == 0 and r.max_output_tokens == 24 and r.to_dict()["store"] is True and r.tool_choice == "auto"
    assert r.text is not None and r.text.format is not None and r.text.format.type == "text"


def test_item_input_and_incomplete_at_max_output_tokens(client: openai.OpenAI) -> None:
    r = client.responses.create(model=MODEL, max_output_tokens=16, input=[
        {"role": "developer", "content": "You write long stories."},
        {"role": "user", "content": [{"type": "input_text", "text": "Tell me a long story about a dragon."}]},
    ])  # fmt: skip
    assert r.status == "incomplete" and r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].type == "message" and r.output[0].status == "incomplete"
    assert r.usage is not None and r.usage.output_tokens == 16


def test_text_format_json_schema_and_json_object(client: openai.OpenAI) -> None:
    short = {"type": "string", "maxLength": 20}
    schema = {"type": "object", "properties": {"city": short, "country": short}, "required": ["city", "country"],
              "additionalProperties": False}  # fmt: skip
    r = client.responses.create(model=MODEL, input="Name a city and its country.", max_output_tokens=64,
                                text={"format": {"type": "json_schema", "name": "place", "schema": schema,
                                                 "strict": True}})  # fmt: skip
    assert set(json.loads(r.output_text)) == {"city", "country"}
    assert r.text is not None and r.text.format is not None and r.text.format.type == "json_schema"
    r = client.responses.create(model=MODEL, input="Answer in JSON: a list of two colours.", max_output_tokens=64,
                                text={"format": {"type": "json_object"}})  # fmt: skip
    assert isinstance(json.loads(r.output_text), dict)
    r = client.responses.create(model=MODEL, input="Say hi.", max_output_tokens=16, text={"format": {"type": "text"}})
    assert r.output_text


class Place(BaseModel):
    city: str
    population: int


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    r = client.responses.parse(model=MODEL, input="Name a big city and its population.", text_format=Place,
                               max_output_tokens=64)  # fmt: skip
    assert isinstance(r.output_parsed, Place)


def test_function_tool_round_trip(client: openai.OpenAI) -> None:
    ask: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.responses.create(model=MODEL, input=ask, tools=[WEATHER], tool_choice="required",
                                    parallel_tool_calls=False, max_output_tokens=64, store=False)  # fmt: skip
    [call] = first.output
    assert isinstance(call, ResponseFunctionToolCall) and call.name == "get_weather"
    assert call.id is not None and call.id.startswith("fc_")
    assert "city" in json.loads(call.arguments) and call.call_id
    assert first.to_dict()["store"] is False and first.tools[0].type == "function"
    follow = [*ask, call.model_dump(exclude_none=True),
              {"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature_c": 21}'}]  # fmt: skip
    second = client.responses.create(model=MODEL, input=follow, tools=[WEATHER],
                                     tool_choice="none", max_output_tokens=32)  # fmt: skip
    assert second.output[0].type == "message" and second.output_text


def test_named_and_allowed_tools_choices(client: openai.OpenAI) -> None:
    other: Any = {**WEATHER, "name": "get_time", "description": "Get the time in a city."}
    r = client.responses.create(model=MODEL, input="Weather in Rome?", tools=[WEATHER, other],
                                tool_choice={"type": "function", "name": "get_time"}, max_output_tokens=64)  # fmt: skip
    assert [o.type for o in r.output] == ["function_call"] and r.output[0].name == "get_time"  # type: ignore[union-attr]
    allowed: Any = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"}]}
    r = client.responses.create(model=MODEL, input="Time in Rome?", tools=[WEATHER, other],
                                tool_choice=allowed, max_output_tokens=64)  # fmt: skip
    assert {o.name for o in r.output if o.type == "function_call"} == {"get_weather"}
    assert r.tool_choice.type == "allowed_tools"  # type: ignore[union-attr]


def test_logprobs_with_include(client: openai.OpenAI) -> None:
    r = client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=16, top_logprobs=2,
                                include=["message.output_text.logprobs"])  # fmt: skip
    [message] = r.output
    assert isinstance(message, ResponseOutputMessage) and r.usage is not None
    [part] = message.content
    assert isinstance(part, ResponseOutputText) and part.logprobs and len(part.logprobs) == r.usage.output_tokens
    assert all(len(lp.top_logprobs) == 2 and lp.logprob <= 0 for lp in part.logprobs)
    assert "".join(lp.token for lp in part.logprobs) == part.text


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": "x"}, "model", "missing_required_parameter"),
        ({"model": MODEL}, "input", "missing_required_parameter"),
        ({"model": MODEL, "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_parameter"),
        ({"model": MODEL, "input": "x", "reasoning": {"effort": "low"}}, "reasoning", "unsupported_parameter"),
        ({"model": MODEL, "input": "x", "temperature": 9}, "temperature", "decimal_above_max_value"),
        (
            {"model": MODEL, "input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]},
            "input",
            None,
        ),
        (
            {"model": MODEL, "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]},
            "input",
            None,
        ),
        (
            {"model": MODEL, "input": "x", "previous_response_id": "resp_unknown"},
            "previous_response_id",
            "previous_response_not_found",
        ),
        ({"model": MODEL, "input": [{"type": "item_reference", "id": "msg_unknown"}]}, "input[0].id", "item_not_found"),
        (
            {
                "model": MODEL,
                "input": "x",
                "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object", "not": {}}}},
            },
            "text.format",
            "invalid_json_schema",
        ),
    ],
)
def test_faults_are_openai_400s(http: httpx.Client, body: dict[str, Any], param: str, code: str | None) -> None:
    for prefix in ("/v1", "/api/v1"):
        got = http.post(f"{prefix}/responses", json=body)
        assert got.status_code == 400, got.text
        error = got.json()["error"]
        assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="no-such-model", input="x")
    assert info.value.code == "model_not_found"


SMALL_CTX = 512


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    """A server whose model has a 512-token context (quick to overflow, quick to prefill)."""
    settings = make_settings(data_dir=str(tmp_path_factory.mktemp("small")))
    settings = settings.model_copy(update={"models": [m.model_copy(update={"n_ctx": SMALL_CTX})
                                                      for m in settings.models]})  # fmt: skip
    server = ServerThread(settings).start()
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0) as c:
        yield c
    server.stop()


def long_conversation(turns: int = 8) -> list[Any]:
    """More than a 512-token context: turns of ~70 tokens each."""
    items: list[Any] = []
    for i in range(turns):
        items += [{"role": "user", "content": f"Turn {i}: " + "the quick brown fox jumps over the lazy dog " * 6},
                  {"role": "assistant", "content": f"Noted, turn {i}."}]  # fmt: skip
    return [*items, {"role": "user", "content": "Say OK."}]


def test_truncation_auto_drops_the_oldest_turns_and_disabled_answers_400(small: openai.OpenAI) -> None:
    items = long_conversation()
    with pytest.raises(openai.BadRequestError) as info:
        small.responses.create(model=MODEL, input=items, max_output_tokens=16, store=False)
    assert (info.value.code, info.value.param) == ("context_length_exceeded", "input")
    r = small.responses.create(model=MODEL, input=items, max_output_tokens=16, truncation="auto", store=False)
    assert r.truncation == "auto" and r.usage is not None and r.usage.input_tokens + 16 <= SMALL_CTX
    assert r.usage.input_tokens + 16 + 80 > SMALL_CTX  # only as many turns as needed were dropped
    with small.responses.stream(model=MODEL, input=items, max_output_tokens=128, temperature=0, truncation="auto",
                                store=False) as stream:  # fmt: skip
        usage = stream.get_final_response().usage
    assert usage is not None and usage.input_tokens + 128 <= SMALL_CTX < usage.input_tokens + 128 + 80
