"""Tool calling with the official SDK: valid calls by construction, every tool_choice, streaming."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from tests.schemas import TOOLS

ALL_TOOLS: list[Any] = [{"type": "function", "function": t} for t in TOOLS]
WEATHER: list[Any] = [ALL_TOOLS[0]]
SCHEMA = {t["name"]: t["parameters"] for t in TOOLS}
ASK_WEATHER: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]


def create(client: openai.OpenAI, **kwargs: Any) -> Any:
    args: dict[str, Any] = {"model": "gpt-4", "messages": ASK_WEATHER, "temperature": 0, "max_tokens": 200}
    return client.chat.completions.create(**{**args, **kwargs})


def assert_valid_calls(calls: list[Any]) -> None:
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), SCHEMA[call.function.name])


@pytest.mark.parametrize("tool", [t["name"] for t in TOOLS])
def test_a_named_tool_choice_calls_that_tool_with_valid_arguments(client: openai.OpenAI, tool: str) -> None:
    r = create(client, messages=[{"role": "user", "content": f"Please use {tool}."}], tools=ALL_TOOLS,
               tool_choice={"type": "function", "function": {"name": tool}})  # fmt: skip
    choice = r.choices[0]
    assert choice.finish_reason == "stop"  # OpenAI's finish_reason for a forced function
    assert choice.message.content is None
    assert [c.function.name for c in choice.message.tool_calls] == [tool]
    assert_valid_calls(choice.message.tool_calls)


def test_required_gives_tool_calls_that_validate(client: openai.OpenAI) -> None:
    for seed, question in enumerate(["Add 2 and 3.", "Search for cats.", "Book a flight to Rome."]):
        r = create(client, messages=[{"role": "user", "content": question}], tools=ALL_TOOLS, tool_choice="required",
                   temperature=0.7, seed=seed)  # fmt: skip
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None and choice.message.tool_calls
        assert_valid_calls(choice.message.tool_calls)


def test_auto_gives_either_content_or_valid_calls(client: openai.OpenAI) -> None:
    for seed in range(4):
        r = create(client, tools=WEATHER, tool_choice="auto", temperature=1.0, seed=seed, max_tokens=80)
        message = r.choices[0].message
        if message.tool_calls:
            assert message.content is None and r.choices[0].finish_reason == "tool_calls"
            assert_valid_calls(message.tool_calls)
        else:
            assert "<tool_call>" not in (message.content or "")


def test_none_never_calls_a_tool(client: openai.OpenAI) -> None:
    r = create(client, tools=WEATHER, tool_choice="none", max_tokens=30)
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].message.content


def test_parallel_tool_calls_false_gives_at_most_one_call(client: openai.OpenAI) -> None:
    r = create(client, tools=WEATHER, tool_choice="required", parallel_tool_calls=False)
    assert len(r.choices[0].message.tool_calls) == 1
    r = create(client, tools=WEATHER, tool_choice="required")  # this model then asks twice (c and f)
    assert len(r.choices[0].message.tool_calls) >= 1


def test_streamed_tool_calls_reassemble_to_the_non_streamed_calls(client: openai.OpenAI) -> None:
    args: dict[str, Any] = {"tools": WEATHER, "tool_choice": "required"}
    plain = create(client, **args).choices[0].message
    state: ChatCompletionStreamState = ChatCompletionStreamState()
    saw_content = False
    for chunk in create(client, **args, stream=True):
        state.handle_chunk(chunk)
        for choice in chunk.choices:
            saw_content = saw_content or bool(choice.delta.content)
            for delta in choice.delta.tool_calls or []:
                if delta.id is not None:  # the first delta of a call names it, with empty arguments
                    assert delta.type == "function" and delta.function.name and delta.function.arguments == ""
                else:
                    assert delta.function.name is None
    final = state.get_final_completion().choices[0]
    assert not saw_content
    assert final.finish_reason == "tool_calls"
    streamed = [(c.function.name, c.function.arguments) for c in final.message.tool_calls or []]
    assert streamed == [(c.function.name, c.function.arguments) for c in plain.tool_calls]


def test_a_tool_round_trip(client: openai.OpenAI) -> None:
    first = create(client, tools=WEATHER, tool_choice="required", parallel_tool_calls=False).choices[0].message
    call = first.tool_calls[0]
    messages = [
        *ASK_WEATHER,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})},
    ]
    r = create(client, messages=messages, tools=WEATHER, tool_choice="none", max_tokens=40)
    assert r.choices[0].message.content
    assert r.usage.prompt_tokens > 40


def test_tool_message_ordering_rules_are_openais(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        create(client, messages=[*ASK_WEATHER, {"role": "tool", "tool_call_id": "call_x", "content": "1"}])
    assert err.value.body["param"] == "messages[1].role"  # type: ignore[index]
    calls = [{"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]
    with pytest.raises(openai.BadRequestError) as err:
        create(client, messages=[*ASK_WEATHER, {"role": "assistant", "tool_calls": calls},
                                 {"role": "user", "content": "and?"}])  # fmt: skip
    assert "call_a" in err.value.message


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": WEATHER, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ],
)
def test_bad_tool_requests_are_400(client: openai.OpenAI, fields: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        create(client, **fields)
    assert err.value.body["param"] == param  # type: ignore[index]


def test_legacy_functions_answer_in_the_legacy_shape(client: openai.OpenAI) -> None:
    functions = [TOOLS[1]]
    r = create(client, messages=[{"role": "user", "content": "Add 2 and 3."}], functions=functions,
               function_call={"name": "add"})  # fmt: skip
    message = r.choices[0].message
    assert message.tool_calls is None
    assert message.function_call.name == "add"
    jsonschema.validate(json.loads(message.function_call.arguments), TOOLS[1]["parameters"])
    r = create(client, messages=[{"role": "user", "content": "Add 2 and 3."}], functions=functions, stream=True)
    name, arguments, finish = "", "", None
    for chunk in r:
        for choice in chunk.choices:
            if choice.delta.function_call:
                name += choice.delta.function_call.name or ""
                arguments += choice.delta.function_call.arguments or ""
            finish = choice.finish_reason or finish
    if name:
        assert name == "add" and finish == "function_call"
        jsonschema.validate(json.loads(arguments), TOOLS[1]["parameters"])


@pytest.mark.parametrize("tool", ["schedule", "create_user", "book_flight"])
def test_a_call_cut_by_max_tokens_still_has_valid_arguments(client: openai.OpenAI, tool: str) -> None:
    """As max_tokens nears, the call is closed: its arguments parse and validate; finish_reason says length."""
    for seed in range(3):
        r = create(client, messages=[{"role": "user", "content": f"Please use {tool}."}], tools=ALL_TOOLS,
                   tool_choice={"type": "function", "function": {"name": tool}}, max_tokens=48, temperature=1.0,
                   seed=seed)  # fmt: skip
        choice = r.choices[0]
        assert r.usage.completion_tokens <= 48
        assert [c.function.name for c in choice.message.tool_calls] == [tool]
        assert_valid_calls(choice.message.tool_calls)
