"""Anthropic's Messages API on the real server and the real local model, with the official ``anthropic`` SDK
unchanged (``base_url`` at chatgate) and raw HTTP for the bytes of the stream."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from tests.serving import ServerThread

MODEL = "smollm2-135m-instruct"
HI: list[Any] = [{"role": "user", "content": "Say hello."}]
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [{"name": "get_weather", "description": "The weather in a city.", "input_schema": WEATHER_SCHEMA}]
ASK_WEATHER: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def claude(base_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=base_url, api_key="anything", max_retries=0) as c:
        yield c


def events_of(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE event; every event is exactly ``event:`` then ``data:`` lines."""
    assert raw.endswith("\n\n")
    out = []
    for block in raw[:-2].split("\n\n"):
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        name, data = lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])
        assert data["type"] == name
        out.append((name, data))
    return out


def text_of(message: anthropic.types.Message) -> str:
    block = message.content[0]
    assert block.type == "text"
    return block.text


def test_create_answers_an_anthropic_message(claude: anthropic.Anthropic) -> None:
    r = claude.messages.create(model=MODEL, max_tokens=12, system="Be brief.", messages=HI)
    assert r.type == "message" and r.role == "assistant" and r.model == MODEL and r.id.startswith("msg_")
    assert [b.type for b in r.content] == ["text"] and text_of(r)
    assert r.stop_reason in ("end_turn", "max_tokens") and r.stop_sequence is None
    assert r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 12


def test_system_as_text_blocks_is_the_same_prompt_as_a_string(claude: anthropic.Anthropic) -> None:
    plain = claude.messages.create(model=MODEL, max_tokens=1, system="Be brief.\n\nAnswer in French.", messages=HI)
    blocks = claude.messages.create(
        model=MODEL,
        max_tokens=1,
        messages=HI,
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in French."}],
    )
    total = plain.usage.input_tokens + (plain.usage.cache_read_input_tokens or 0)
    assert blocks.usage.input_tokens + (blocks.usage.cache_read_input_tokens or 0) == total  # joined by a blank line


def test_max_tokens_is_reported_as_max_tokens(claude: anthropic.Anthropic) -> None:
    r = claude.messages.create(model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "Write a long story."}])
    assert r.stop_reason == "max_tokens" and r.usage.output_tokens == 3


def test_stop_sequences_stop_the_text_and_never_leak(claude: anthropic.Anthropic) -> None:
    ask: list[Any] = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    free = claude.messages.create(model=MODEL, max_tokens=40, extra_body={"temperature": 0}, messages=ask).content[0]
    assert free.type == "text" and "3" in free.text
    stop = free.text[free.text.index("3") :][:2]
    r = claude.messages.create(
        model=MODEL, max_tokens=40, extra_body={"temperature": 0}, messages=ask, stop_sequences=[stop]
    )
    text = text_of(r) if r.content else ""
    assert stop not in text and free.text.startswith(text) and r.stop_reason == "end_turn"


def test_stream_helpers_give_the_text_and_the_final_message(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model=MODEL, max_tokens=16, extra_body={"temperature": 0}, messages=HI) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and final.content[0].type == "text" and final.content[0].text == "".join(pieces)
    assert final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) > 0 and final.usage.output_tokens > 0
    plain = claude.messages.create(model=MODEL, max_tokens=16, extra_body={"temperature": 0}, messages=HI)
    assert plain.content[0].type == "text" and plain.content[0].text == final.content[0].text
    assert final.stop_reason == plain.stop_reason


def test_the_stream_bytes_follow_anthropics_event_sequence(http: httpx.Client) -> None:
    body = {"model": MODEL, "max_tokens": 8, "stream": True, "messages": HI}
    r = http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = events_of(r.text)
    names = " ".join(name for name, _ in events)
    assert re.fullmatch(
        r"message_start ping content_block_start( content_block_delta)+ content_block_stop "
        r"message_delta message_stop",
        names,
    ), names
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["role"] == "assistant"
    assert events[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert all(d["index"] == 0 and d["delta"]["type"] == "text_delta" for n, d in events if n == "content_block_delta")
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 8 and delta["usage"]["input_tokens"] >= 0


def test_a_tool_use_round_trip(claude: anthropic.Anthropic) -> None:
    choice: Any = {"type": "any", "disable_parallel_tool_use": True}
    first = claude.messages.create(model=MODEL, max_tokens=200, tools=TOOLS, tool_choice=choice, messages=ASK_WEATHER)
    calls = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use" and len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather" and call.id
    jsonschema.validate(call.input, WEATHER_SCHEMA)
    history: list[Any] = [
        *ASK_WEATHER,
        {"role": "assistant", "content": [c.model_dump(include={"type", "id", "name", "input"}) for c in calls]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": c.id, "content": '{"temperature": 21}'} for c in calls],
        },
    ]
    answer = claude.messages.create(
        model=MODEL, max_tokens=30, tools=TOOLS, tool_choice={"type": "none"}, messages=history
    )
    assert [b.type for b in answer.content] == ["text"] and answer.stop_reason in ("end_turn", "max_tokens")
    alone = claude.messages.count_tokens(model=MODEL, tools=TOOLS, tool_choice={"type": "none"}, messages=ASK_WEATHER)
    assert answer.usage.input_tokens + (answer.usage.cache_read_input_tokens or 0) > alone.input_tokens + 10


def test_a_named_tool_streams_input_json_deltas_that_parse(claude: anthropic.Anthropic, http: httpx.Client) -> None:
    choice = {"type": "tool", "name": "get_weather"}
    with claude.messages.stream(
        model=MODEL,
        max_tokens=80,
        tools=TOOLS,
        tool_choice=choice,  # type: ignore[arg-type]
        messages=ASK_WEATHER,
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and [b.type for b in final.content] == ["tool_use"]
    block = final.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    jsonschema.validate(block.input, WEATHER_SCHEMA)
    body = {
        "model": MODEL,
        "max_tokens": 80,
        "stream": True,
        "tools": TOOLS,
        "tool_choice": choice,
        "messages": ASK_WEATHER,
    }
    events = events_of(http.post("/v1/messages", json=body).text)
    start = next(d for n, d in events if n == "content_block_start")["content_block"]
    assert start["type"] == "tool_use" and start["input"] == {} and start["name"] == "get_weather"
    partial = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta")
    assert all(d["delta"]["type"] == "input_json_delta" for n, d in events if n == "content_block_delta")
    jsonschema.validate(json.loads(partial), WEATHER_SCHEMA)


def test_count_tokens_counts_what_create_is_charged(claude: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "system": "Be brief.", "messages": ASK_WEATHER, "tools": TOOLS}
    counted = claude.messages.count_tokens(**kwargs).input_tokens
    used = claude.messages.create(max_tokens=1, **kwargs).usage
    assert counted == used.input_tokens + (used.cache_read_input_tokens or 0)
    assert claude.messages.count_tokens(model=MODEL, messages=HI).input_tokens < counted


def test_images_are_refused_by_a_model_without_vision(claude: anthropic.Anthropic) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    ask: Any = [{"role": "user", "content": [image, {"type": "text", "text": "What?"}]}]
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model=MODEL, max_tokens=5, messages=ask)
    assert err.value.status_code == 400 and err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_an_unknown_model_is_the_sdks_not_found_error(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as err:
        claude.messages.create(model="claude-nope", max_tokens=5, messages=HI)
    body: Any = err.value.body
    assert body == {"type": "error", "error": {"type": "not_found_error", "message": body["error"]["message"]}}
    assert "claude-nope" in err.value.message and err.value.request_id


BAD: list[tuple[dict[str, Any], str]] = [
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": []}]}, "messages"),
    ({"model": MODEL, "messages": HI}, "max_tokens"),
    ({"model": MODEL, "max_tokens": 0, "messages": HI}, "max_tokens"),
    ({"model": MODEL, "max_tokens": 5, "messages": []}, "messages"),
    ({"model": MODEL, "max_tokens": 5, "messages": HI, "temperature": 1.5}, "temperature"),
    ({"model": MODEL, "max_tokens": 5, "messages": HI, "temperature": "0.5"}, "temperature"),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "role"),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "content"),
    ({"model": MODEL, "max_tokens": 5, "messages": HI, "tools": TOOLS, "tool_choice": {"type": "tool"}}, "name"),
    (
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": HI,
            "tools": TOOLS,
            "tool_choice": {"type": "tool", "name": "other"},
        },
        "other",
    ),
    ({"model": MODEL, "max_tokens": 5, "messages": HI, "tools": [{"name": "s", "type": "web_search_2025"}]}, "tools"),
    ({"model": MODEL, "max_tokens": 5, "messages": HI, "stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
    (
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "21"}]}
            ],
        },
        "toolu_1",
    ),
]


@pytest.mark.parametrize(("body", "mentions"), BAD)
def test_bad_requests_are_400_in_anthropics_shape(http: httpx.Client, body: dict[str, Any], mentions: str) -> None:
    r = http.post("/v1/messages", json=body)
    assert r.status_code == 400, r.text
    error = r.json()
    assert set(error) == {"type", "error"} and error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error" and mentions in error["error"]["message"]


def test_a_body_that_is_not_json_is_400_in_anthropics_shape(http: httpx.Client) -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        r = http.post(path, content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_a_malformed_anthropic_version_is_400(http: httpx.Client) -> None:
    r = http.post(
        "/v1/messages",
        json={"model": MODEL, "max_tokens": 5, "messages": HI},
        headers={"anthropic-version": "yesterday"},
    )
    assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]


def test_the_exchange_is_metered_as_messages(http: httpx.Client, server: ServerThread) -> None:
    assert http.post("/v1/messages", json={"model": MODEL, "max_tokens": 1, "messages": HI}).status_code == 200
    metrics = http.get("/metrics").text
    assert re.search(r'chatgate_gateway_requests_total\{endpoint="messages",status="200"\} [1-9]', metrics)


def test_an_output_format_gives_json_that_follows_the_schema(claude: anthropic.Anthropic) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}  # fmt: skip
    output: Any = {"format": {"type": "json_schema", "schema": schema}}
    r = claude.messages.create(model=MODEL, max_tokens=60, output_config=output, messages=ASK_WEATHER)
    jsonschema.validate(json.loads(text_of(r)), schema)


def test_the_response_cache_holds_for_messages(http: httpx.Client) -> None:
    body = {"model": MODEL, "max_tokens": 4, "temperature": 0, "messages": [{"role": "user", "content": "Cache?"}]}
    first, second = (http.post("/v1/messages", json=body, headers={"x-chatgate-cache": "1"}) for _ in range(2))
    assert (first.headers["x-chatgate-cache"], second.headers["x-chatgate-cache"]) == ("miss", "hit")
    assert first.json()["content"] == second.json()["content"] and first.json()["id"] != second.json()["id"]


def test_a_client_gone_while_sending_its_body_is_not_a_server_error(base_url: str, http: httpx.Client) -> None:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 1000\r\n\r\n{\"model\": ")  # fmt: skip
        time.sleep(0.2)
    for _ in range(100):  # the server notices the disconnect on its own time
        metrics = http.get("/metrics").text
        if 'endpoint="messages",status="499"' in metrics:
            break
        time.sleep(0.05)
    assert 'endpoint="messages",status="499"' in metrics and 'endpoint="messages",status="500"' not in metrics
