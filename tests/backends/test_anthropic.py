"""AnthropicBackend against a fake Anthropic Messages API on loopback: translation both ways,
streaming, tools, JSON mode, usage, and every failure mode."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chatgate.backends.anthropic import AnthropicBackend
from chatgate.backends.upstream import UpstreamConfig
from chatgate.backends.upstream_errors import ANTHROPIC, map_error
from chatgate.errors import UpstreamError
from chatgate.exchange import Exchange
from chatgate.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import Behaviour
from tests.fakes.server import FakeServer
from tests.serving import running

KEY = "sk-ant-test-0123456789"
HELLO: list[dict[str, Any]] = [{"role": "user", "content": "Hi"}]
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME: dict[str, Any] = {"type": "function", "function": {"name": "get_time"}}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeAnthropic, FakeServer]]:
    fake = FakeAnthropic()
    with running(FakeServer(fake.app())) as server:
        yield fake, server


@pytest.fixture
def fake(served: tuple[FakeAnthropic, FakeServer]) -> FakeAnthropic:
    served[0].reset()
    return served[0]


@pytest.fixture
def url(served: tuple[FakeAnthropic, FakeServer]) -> str:
    return served[1].url


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "claude", "messages": HELLO, **fields})


def backend(client: httpx.AsyncClient, url: str) -> AnthropicBackend:
    config = UpstreamConfig(provider="anthropic", model="claude-test", base_url=url, api_key=KEY, timeout=10)
    return AnthropicBackend(config, client)


def complete(url: str, req: ChatCompletionRequest) -> ChatCompletion:
    async def run() -> ChatCompletion:
        async with httpx.AsyncClient() as client:
            return await backend(client, url).complete(req, Exchange("test"))

    return asyncio.run(run())


def stream(url: str, req: ChatCompletionRequest) -> tuple[list[ChatCompletionChunk], UpstreamError | None]:
    """The chunks received, and the error that ended the stream, if any."""
    chunks: list[ChatCompletionChunk] = []

    async def run() -> UpstreamError | None:
        async with httpx.AsyncClient() as client:
            try:
                async for chunk in backend(client, url).stream(req.model_copy(update={"stream": True}), Exchange("t")):
                    chunks.append(chunk)
            except UpstreamError as exc:
                return exc
        return None

    error = asyncio.run(run())
    return chunks, error


def streamed(url: str, req: ChatCompletionRequest) -> list[ChatCompletionChunk]:
    chunks, error = stream(url, req)
    assert error is None
    return chunks


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def failure(url: str, req: ChatCompletionRequest) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        complete(url, req)
    return info.value


# --- plain and streamed answers ------------------------------------------------------------------


def test_a_plain_reply(fake: FakeAnthropic, url: str) -> None:
    r = complete(url, request())
    choice = r.choices[0]
    assert choice.message.content == fake.reply and choice.message.tool_calls is None
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert r.id == "msg_fake" and r.model == "claude-test"
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
        11,
        7,
        18,
    )


def test_the_request_is_anthropics_with_its_headers(fake: FakeAnthropic, url: str) -> None:
    complete(url, request())
    assert fake.requests == [
        {"model": "claude-test", "max_tokens": 4096, "messages": [{"role": "user", "content": "Hi"}]}
    ]
    headers = fake.headers[0]
    assert headers["x-api-key"] == KEY and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers


def test_a_base_url_ending_in_v1_is_not_doubled(fake: FakeAnthropic, url: str) -> None:
    assert complete(url + "/v1/", request()).choices[0].message.content == fake.reply


def test_a_stream_says_what_the_plain_reply_says(fake: FakeAnthropic, url: str) -> None:
    plain = complete(url, request()).choices[0].message.content
    chunks = streamed(url, request())
    assert fake.requests[-1]["stream"] is True
    assert text_of(chunks) == plain
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:])
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert {c.id for c in chunks} == {"msg_fake"} and all(c.usage is None for c in chunks)
    assert "usage" not in chunks[0].model_dump()


def test_include_usage_ends_with_a_usage_chunk(fake: FakeAnthropic, url: str) -> None:
    fake.cache_read = 4
    chunks = streamed(url, request(stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (15, 7, 22)
    assert last.usage.prompt_tokens_details.cached_tokens == 4
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.model_dump()["usage"] is None for c in chunks[:-1])


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens(fake: FakeAnthropic, url: str) -> None:
    fake.cache_read, fake.cache_creation = 5, 3
    usage = complete(url, request()).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (19, 7, 26)
    assert usage.prompt_tokens_details.cached_tokens == 5


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "content_filter")],
)
def test_stop_reasons(fake: FakeAnthropic, url: str, stop_reason: str, finish: str) -> None:
    fake.stop_reason = stop_reason
    assert complete(url, request()).choices[0].finish_reason == finish
    assert streamed(url, request())[-1].choices[0].finish_reason == finish


# --- request translation -------------------------------------------------------------------------


def test_system_and_developer_messages_become_the_system_prompt(fake: FakeAnthropic, url: str) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bonjour."},
        {"role": "user", "content": [{"type": "text", "text": "Ça va"}, {"type": "text", "text": "?"}]},
    ]
    complete(url, request(messages=messages))
    body = fake.requests[0]
    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert body["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bonjour."},
        {"role": "user", "content": [{"type": "text", "text": "Ça va"}, {"type": "text", "text": "?"}]},
    ]


def test_sampling_parameters(fake: FakeAnthropic, url: str) -> None:
    complete(url, request(temperature=1.7, top_p=0.9, top_k=40, stop="END", max_tokens=50, user="u-42", seed=3))
    body = fake.requests[0]
    assert body["temperature"] == 1.0  # clipped to Anthropic's range
    assert (body["top_p"], body["top_k"], body["stop_sequences"]) == (0.9, 40, ["END"])
    assert body["max_tokens"] == 50 and body["metadata"] == {"user_id": "u-42"}
    assert "seed" not in body and "user" not in body and "stop" not in body

    complete(url, request(temperature=0.3, top_k=0, stop=["a", "b"], max_tokens=50, max_completion_tokens=100))
    body = fake.requests[1]
    assert (body["temperature"], body["stop_sequences"], body["max_tokens"]) == (0.3, ["a", "b"], 100)
    assert "top_k" not in body


def test_tool_definitions_and_choices(fake: FakeAnthropic, url: str) -> None:
    complete(url, request(tools=[WEATHER, TIME]))
    body = fake.requests[0]
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather for a city.",
         "input_schema": WEATHER["function"]["parameters"]},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]  # fmt: skip
    assert "tool_choice" not in body
    cases: list[tuple[Any, dict[str, Any]]] = [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "get_time"}}, {"type": "tool", "name": "get_time"}),
    ]
    for choice, expected in cases:
        complete(url, request(tools=[WEATHER, TIME], tool_choice=choice))
        assert fake.requests[-1]["tool_choice"] == expected
    complete(url, request(tools=[WEATHER, TIME], parallel_tool_calls=False))
    assert fake.requests[-1]["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_tool_calls_and_consecutive_tool_results_become_blocks(fake: FakeAnthropic, url: str) -> None:
    calls = [
        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        {"id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
    ]
    messages = [
        {"role": "user", "content": "Weather and time in Oslo?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Snow"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "10:00"}]},
        {"role": "user", "content": "Thanks!"},
    ]
    complete(url, request(messages=messages, tools=[WEATHER, TIME]))
    assert fake.requests[0]["messages"][1:] == [
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Snow"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "10:00"},
            {"type": "text", "text": "Thanks!"},
        ]},
    ]  # fmt: skip


def test_images_by_url_and_by_data_uri_and_pdf_files(fake: FakeAnthropic, url: str) -> None:
    content = [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
    ]
    complete(url, request(messages=[{"role": "user", "content": content}]))
    assert fake.requests[0]["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
    ]


def test_an_unusable_image_or_part_is_a_400_before_any_request(fake: FakeAnthropic, url: str) -> None:
    image = [{"type": "image_url", "image_url": {"url": "ftp://example.com/cat.png"}}]
    err = failure(url, request(messages=[{"role": "user", "content": image}]))
    assert (err.status, err.param, err.retryable) == (400, "messages[0].content[0].image_url.url", False)
    audio = [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]
    err = failure(url, request(messages=[{"role": "user", "content": audio}]))
    assert (err.status, err.param) == (400, "messages[0].content[0].type")
    assert fake.requests == []


def test_n_above_one_is_refused(fake: FakeAnthropic, url: str) -> None:
    err = failure(url, request(n=2))
    assert (err.status, err.param, err.retryable, err.type) == (400, "n", False, "invalid_request_error")
    _, streamed_err = stream(url, request(n=3))
    assert streamed_err is not None and streamed_err.param == "n"
    assert failure(url, request(logprobs=True)).param == "logprobs"
    assert fake.requests == []


# --- tools and JSON mode -------------------------------------------------------------------------


def test_tool_calls(fake: FakeAnthropic, url: str) -> None:
    r = complete(url, request(tools=[WEATHER, TIME]))
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.id, c.type, c.function.name) for c in calls] == [
        ("toolu_fake0", "function", "get_weather"),
        ("toolu_fake1", "function", "get_time"),
    ]
    assert all(json.loads(c.function.arguments) == fake.tool_input for c in calls)


def test_text_before_a_tool_call_is_the_content(fake: FakeAnthropic, url: str) -> None:
    fake.preamble = "I'll look it up."
    message = complete(url, request(tools=[WEATHER], parallel_tool_calls=False)).choices[0].message
    assert message.content == "I'll look it up." and len(message.tool_calls or []) == 1


def test_a_named_tool_finishes_with_stop_and_none_gives_text(fake: FakeAnthropic, url: str) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    choice = complete(url, request(tools=[WEATHER, TIME], tool_choice=named)).choices[0]
    assert choice.finish_reason == "stop"  # as OpenAI answers a forced function
    assert [c.function.name for c in choice.message.tool_calls or []] == ["get_time"]
    choice = complete(url, request(tools=[WEATHER], tool_choice="none")).choices[0]
    assert choice.message.content == fake.reply and choice.message.tool_calls is None


def reassemble(chunks: list[ChatCompletionChunk]) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            call["name"] += (delta.function or {}).get("name", "")
            call["arguments"] += (delta.function or {}).get("arguments", "")
    return calls


def test_streamed_tool_calls_reassemble_to_the_plain_ones(fake: FakeAnthropic, url: str) -> None:
    fake.preamble = "Checking."
    plain = complete(url, request(tools=[WEATHER, TIME])).choices[0].message
    chunks = streamed(url, request(tools=[WEATHER, TIME]))
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and text_of(chunks) == plain.content == "Checking."
    calls = reassemble(chunks)
    expected = {i: {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                for i, c in enumerate(plain.tool_calls or [])}  # fmt: skip
    assert list(calls) == [0, 1]
    assert {i: {**c, "arguments": json.loads(c["arguments"])} for i, c in calls.items()} == {
        i: {**c, "arguments": json.loads(c["arguments"])} for i, c in expected.items()
    }
    openers = [d for c in chunks for d in c.choices[0].delta.tool_calls or [] if d.id is not None]
    assert [(d.type, (d.function or {}).get("arguments")) for d in openers] == [("function", ""), ("function", "")]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_streamed_tool_call_alone_carries_the_role(fake: FakeAnthropic, url: str) -> None:
    chunks = streamed(url, request(tools=[WEATHER]))
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.tool_calls is not None and first.tool_calls[0].id == "toolu_fake0"
    assert text_of(chunks) == ""
    assert json.loads(reassemble(chunks)[0]["arguments"]) == fake.tool_input


def test_legacy_functions(fake: FakeAnthropic, url: str) -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
        },
        {"role": "function", "name": "get_weather", "content": "Sunny"},
    ]
    functions = [WEATHER["function"], TIME["function"]]
    r = complete(url, request(messages=messages, functions=functions))
    body = fake.requests[0]
    use, result = body["messages"][1]["content"][0], body["messages"][2]["content"][0]
    assert use["type"] == "tool_use" and use["input"] == {"city": "Rome"}
    assert result == {"type": "tool_result", "tool_use_id": use["id"], "content": "Sunny"}
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    choice = r.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    assert choice.message.function_call is not None and choice.message.function_call.name == "get_weather"
    chunks = streamed(url, request(messages=messages, functions=functions))
    pieces = [c.choices[0].delta.function_call for c in chunks if c.choices[0].delta.function_call]
    assert pieces[0] == {"name": "get_weather", "arguments": ""}
    assert json.loads("".join(p["arguments"] for p in pieces)) == fake.tool_input


def test_json_object_mode_uses_a_forced_tool(fake: FakeAnthropic, url: str) -> None:
    r = complete(url, request(response_format={"type": "json_object"}))
    body = fake.requests[0]
    assert body["tools"][0]["name"] == "json_output" and body["tools"][0]["input_schema"] == {"type": "object"}
    assert body["tool_choice"] == {"type": "tool", "name": "json_output", "disable_parallel_tool_use": True}
    choice = r.choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert json.loads(choice.message.content or "") == fake.tool_input


def test_json_schema_mode_streamed(fake: FakeAnthropic, url: str) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}
    req = request(response_format={"type": "json_schema", "json_schema": {"name": "forecast", "schema": schema}})
    chunks = streamed(url, req)
    assert fake.requests[0]["tools"][0]["input_schema"] == schema
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.tool_calls is None for c in chunks)
    assert json.loads(text_of(chunks)) == fake.tool_input
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_json_mode_beside_user_tools_lets_the_model_choose(fake: FakeAnthropic, url: str) -> None:
    complete(url, request(tools=[WEATHER], response_format={"type": "json_object"}))
    body = fake.requests[0]
    assert [t["name"] for t in body["tools"]] == ["get_weather", "json_output"]
    assert body["tool_choice"] == {"type": "any"}
    complete(url, request(tools=[WEATHER], tool_choice="none", response_format={"type": "json_object"}))
    assert [t["name"] for t in fake.requests[1]["tools"]] == ["json_output"]


# --- failures ------------------------------------------------------------------------------------

ERRORS = [
    # behaviour, status, type, code, retryable, retry_after
    (Behaviour(status=400), 400, "invalid_request_error", "invalid_request_error", False, None),
    (Behaviour(status=401), 502, "upstream_auth_error", "upstream_auth_failed", False, None),
    (Behaviour(status=403), 502, "upstream_auth_error", "upstream_auth_failed", False, None),
    (Behaviour(status=404), 404, "invalid_request_error", "not_found_error", False, None),
    (Behaviour(status=413), 400, "invalid_request_error", "request_too_large", False, None),
    (Behaviour(status=429, retry_after="7"), 429, "requests", "rate_limit_exceeded", True, 7.0),
    (Behaviour(status=500), 500, "server_error", "api_error", True, None),
    (Behaviour(status=529, retry_after="2"), 503, "server_error", "overloaded", True, 2.0),
]


@pytest.mark.parametrize(("behaviour", "status", "kind", "code", "retryable", "wait"), ERRORS)
@pytest.mark.parametrize("streaming", [False, True])
def test_error_statuses(
    fake: FakeAnthropic, url: str, behaviour: Behaviour, status: int, kind: str, code: str, retryable: bool,
    wait: float | None, streaming: bool,
) -> None:  # fmt: skip
    fake.then(behaviour)
    if streaming:
        chunks, error = stream(url, request())
        assert chunks == [] and error is not None  # raised before the first chunk
    else:
        error = failure(url, request())
    assert (error.status, error.type, error.code, error.retryable, error.retry_after) == (
        status, kind, code, retryable, wait,
    )  # fmt: skip
    assert KEY not in error.message


def test_a_429_without_retry_after_has_no_hint(fake: FakeAnthropic, url: str) -> None:
    fake.then(Behaviour(status=429))
    error = failure(url, request())
    assert error.retryable and error.retry_after is None and error.headers() == {}


def test_a_connection_reset(fake: FakeAnthropic, url: str) -> None:
    fake.then(Behaviour(reset=True), Behaviour(reset=True))
    error = failure(url, request())
    assert (error.status, error.code, error.retryable) == (502, "upstream_unreachable", True)
    chunks, error2 = stream(url, request())
    assert chunks == [] and error2 is not None and error2.code == "upstream_unreachable"


def test_an_unreachable_upstream() -> None:
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = failure(f"http://127.0.0.1:{port}", request())
    assert (error.status, error.code, error.retryable) == (502, "upstream_unreachable", True)


def test_malformed_json(fake: FakeAnthropic, url: str) -> None:
    fake.then(Behaviour(malformed=True), Behaviour(malformed=True))
    error = failure(url, request())
    assert (error.status, error.code) == (502, "upstream_malformed_response")
    chunks, error2 = stream(url, request())
    assert chunks == [] and error2 is not None and (error2.status, error2.code) == (502, "upstream_malformed_response")


def test_a_stream_cut_in_the_middle(fake: FakeAnthropic, url: str) -> None:
    fake.then(Behaviour(cut_after=5))
    chunks, error = stream(url, request())
    assert chunks and chunks[0].choices[0].delta.role == "assistant"
    assert error is not None and (error.status, error.code, error.retryable) == (502, "upstream_stream_cut", False)


def test_a_stream_that_ends_without_message_stop(fake: FakeAnthropic, url: str) -> None:
    fake.truncate = True
    chunks, error = stream(url, request())
    assert text_of(chunks) == fake.reply
    assert error is not None and (error.status, error.code) == (502, "upstream_stream_cut")


def test_an_error_event_before_any_content(fake: FakeAnthropic, url: str) -> None:
    fake.then(Behaviour(error_code="overloaded_error"), Behaviour(error_code="invalid_request_error"))
    chunks, error = stream(url, request())
    assert chunks == [] and error is not None
    assert (error.status, error.code, error.retryable) == (503, "overloaded", True)
    chunks, error = stream(url, request())
    assert error is not None and (error.status, error.retryable) == (400, False)


def test_models(url: str) -> None:
    async def run() -> list[str]:
        async with httpx.AsyncClient() as client:
            return [m.id for m in backend(client, url).models()]

    assert asyncio.run(run()) == ["anthropic/claude-test"]


def test_an_upstream_message_never_echoes_the_key() -> None:
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": f"bad key prefix {KEY}"}}
    error = map_error(400, body, httpx.Headers(), "anthropic", KEY, dialect=ANTHROPIC)
    assert KEY not in error.message and error.message == "bad key prefix [redacted]"
