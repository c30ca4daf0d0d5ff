"""Streamed responses: OpenAI's semantic events, byte for byte (``event:`` lines, ``sequence_number`` from
0 without gaps, the order of an item's events, no ``[DONE]``), and the official SDK's
``client.responses.stream`` helpers on the same stream."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

MODEL = "gpt-4.1-mini"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
}  # fmt: skip
TEXT_ITEM = ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
             "response.output_text.done", "response.content_part.done", "response.output_item.done"]  # fmt: skip
CALL_ITEM = ["response.output_item.added", "response.function_call_arguments.delta",
             "response.function_call_arguments.done", "response.output_item.done"]  # fmt: skip


def events(http: httpx.Client, body: dict[str, Any], path: str = "/v1/responses") -> list[dict[str, Any]]:
    """The stream's events, checked at the byte level: each an ``event:`` line naming its type and one
    ``data:`` line, separated by blank lines, nothing else (no ``[DONE]``)."""
    with http.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    assert raw.endswith("\n\n") and "[DONE]" not in raw
    out = []
    for block in raw.removesuffix("\n\n").split("\n\n"):
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        event = json.loads(data.removeprefix("data: "))
        assert event["type"] == name.removeprefix("event: ")
        out.append(event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def collapse(kinds: list[str]) -> list[str]:
    """Runs of the same event type as one."""
    return [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]


def test_text_stream_event_order_and_contents(http: httpx.Client) -> None:
    got = events(http, {"model": MODEL, "input": "Say hello.", "max_output_tokens": 16, "seed": 7})
    kinds = [e["type"] for e in got]
    assert collapse(kinds)[:2] == ["response.created", "response.in_progress"]
    assert collapse(kinds)[2:-1] == TEXT_ITEM and kinds[-1] in ("response.completed", "response.incomplete")
    assert got[0]["response"]["status"] == "in_progress" and got[0]["response"]["output"] == []
    final = got[-1]["response"]
    text = "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta")
    done = next(e for e in got if e["type"] == "response.output_text.done")
    assert text == done["text"] == final["output"][0]["content"][0]["text"] != ""
    message_id = got[2]["item"]["id"]
    assert all(e.get("item_id", message_id) == message_id for e in got[2:-1])
    assert all(e["output_index"] == 0 for e in got[2:-1])
    assert all(len(e["delta"] + e["obfuscation"]) % 16 == 0 for e in got if e["type"].endswith(".delta"))
    assert final["usage"]["output_tokens"] > 0 and final["id"] == got[0]["response"]["id"]
    assert final["model"] == "smollm2-135m-instruct"
    plain = http.post("/v1/responses", json={"model": MODEL, "input": "Say hello.", "max_output_tokens": 16,
                                             "seed": 7}).json()  # fmt: skip
    assert plain["output"][0]["content"][0]["text"] == text  # the same seed, streamed or not
    assert [plain["usage"][k] for k in ("input_tokens", "output_tokens")] == [final["usage"][k] for k in (
        "input_tokens", "output_tokens")]  # fmt: skip


def test_obfuscation_can_be_turned_off_and_api_v1_streams_too(http: httpx.Client) -> None:
    body = {"model": MODEL, "input": "Hi", "max_output_tokens": 16, "stream_options": {"include_obfuscation": False}}
    got = events(http, body, path="/api/v1/responses")
    deltas = [e for e in got if e["type"] == "response.output_text.delta"]
    assert deltas and all("obfuscation" not in e for e in deltas)


def test_function_call_stream(http: httpx.Client) -> None:
    got = events(http, {"model": MODEL, "input": "Weather in Paris?", "tools": [WEATHER], "tool_choice": "required",
                        "max_output_tokens": 64, "parallel_tool_calls": False})  # fmt: skip
    kinds = [e["type"] for e in got]
    assert collapse(kinds) == ["response.created", "response.in_progress", *CALL_ITEM, "response.completed"]
    added = got[2]["item"]
    assert added["type"] == "function_call" and added["name"] == "get_weather" and added["arguments"] == ""
    arguments = "".join(e["delta"] for e in got if e["type"] == "response.function_call_arguments.delta")
    done = next(e for e in got if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == arguments and "city" in json.loads(arguments) and done["name"] == "get_weather"
    [call] = got[-1]["response"]["output"]
    assert call == {**added, "status": "completed", "arguments": arguments}


def test_errors_before_the_first_event_have_a_status(http: httpx.Client) -> None:
    r = http.post("/v1/responses", json={"model": "no-such-model", "input": "x", "stream": True})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_sdk_stream_helpers(client: openai.OpenAI) -> None:
    deltas: list[str] = []
    # the SDK's final response needs ``response.completed``: room enough for the answer to end by itself
    with client.responses.stream(model=MODEL, input="Say hello.", max_output_tokens=256, temperature=0) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert final.output_text == "".join(deltas) != "" and final.id.startswith("resp_")
    assert final.usage is not None and final.usage.output_tokens > 0


def test_sdk_stream_with_a_tool_and_create_stream_true(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Weather in Oslo?", tools=[WEATHER], tool_choice="required",
                                 parallel_tool_calls=False, max_output_tokens=128) as stream:  # fmt: skip
        done = [e for e in stream if e.type == "response.function_call_arguments.done"]
        final = stream.get_final_response()
    assert done and final.output[0].type == "function_call"
    kinds = [e.type for e in client.responses.create(model=MODEL, input="Hi", max_output_tokens=16, stream=True)]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")


@pytest.mark.parametrize("store", [True, False])
def test_streamed_response_is_stored_like_a_plain_one(client: openai.OpenAI, store: bool) -> None:
    with client.responses.stream(model=MODEL, input="Say hi.", max_output_tokens=256, temperature=0,
                                 store=store) as stream:  # fmt: skip
        final = stream.get_final_response()
    if store:
        assert client.responses.retrieve(final.id).output_text == final.output_text
    else:
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(final.id)
