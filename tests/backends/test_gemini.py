"""GeminiBackend against a fake Gemini API on loopback: translation both ways, streaming, errors."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from chatgate.backends.gemini import GeminiBackend, sse_data
from chatgate.backends.gemini_translate import SKIP_SIGNATURE, gemini_schema
from chatgate.backends.upstream import UpstreamConfig
from chatgate.backends.upstream_errors import GEMINI, map_error
from chatgate.errors import UpstreamError
from chatgate.exchange import Exchange
from chatgate.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from tests.fakes.gemini_upstream import FakeGemini, GeminiBehaviour
from tests.fakes.openai_upstream import Behaviour
from tests.fakes.server import FakeServer
from tests.serving import running

T = TypeVar("T")
KEY = "gm-secret-key-0123456789"
MODEL = "gemini-test"
CTX = Exchange(request_id="req-test")
REPLY = "Hello from the fake Gemini."
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                               "additionalProperties": False}}}  # fmt: skip
TIME_TOOL = {"type": "function", "function": {"name": "get_time"}}


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeGemini, FakeServer]]:
    fake = FakeGemini(reply=REPLY)
    with running(FakeServer(fake.app())) as server:
        yield fake, server


@pytest.fixture
def fake(upstream: tuple[FakeGemini, FakeServer]) -> FakeGemini:
    fake = upstream[0]
    for log in (fake.queue, fake.requests, fake.queries, fake.headers, fake.paths):
        log.clear()
    fake.api_key, fake.thoughts = None, 0
    return fake


@pytest.fixture
def base(upstream: tuple[FakeGemini, FakeServer], fake: FakeGemini) -> str:
    return upstream[1].url


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "gemini", "messages": [{"role": "user", "content": "Hi"}],
                                                 **fields})  # fmt: skip


def with_backend(base: str, work: Callable[[GeminiBackend], Awaitable[T]], *, model: str = MODEL,
                 timeout: float = 30.0) -> T:  # fmt: skip
    async def main() -> T:
        async with httpx.AsyncClient() as client:
            config = UpstreamConfig(provider="gemini", model=model, base_url=base, api_key=KEY, timeout=timeout)
            return await work(GeminiBackend(config, client))

    return asyncio.run(main())


def complete(base: str, req: ChatCompletionRequest, **kw: Any) -> ChatCompletion:
    return with_backend(base, lambda backend: backend.complete(req, CTX), **kw)


def stream(base: str, req: ChatCompletionRequest) -> list[ChatCompletionChunk]:
    async def collect(backend: GeminiBackend) -> list[ChatCompletionChunk]:
        return [chunk async for chunk in backend.stream(req, CTX)]

    return with_backend(base, collect)


def stream_failure(base: str, req: ChatCompletionRequest) -> tuple[list[ChatCompletionChunk], UpstreamError]:
    chunks: list[ChatCompletionChunk] = []

    async def collect(backend: GeminiBackend) -> None:
        async for chunk in backend.stream(req, CTX):
            chunks.append(chunk)

    with pytest.raises(UpstreamError) as info:
        with_backend(base, collect)
    return chunks, info.value


def complete_failure(base: str, req: ChatCompletionRequest, **kw: Any) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        complete(base, req, **kw)
    return info.value


def text_of(chunks: list[ChatCompletionChunk], index: int = 0) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == index)


def finishes(chunks: list[ChatCompletionChunk]) -> list[tuple[int, str]]:
    return [
        (c.choices[0].index, c.choices[0].finish_reason or "")
        for c in chunks
        if c.choices and c.choices[0].finish_reason
    ]


# --- answers -----------------------------------------------------------------------------------


def test_plain_completion(base: str, fake: FakeGemini) -> None:
    result = complete(base, request())
    assert result.choices[0].message.content == REPLY
    assert result.choices[0].finish_reason == "stop"
    assert result.choices[0].message.tool_calls is None
    assert result.id == "chatcmpl-fake-response-id" and result.model == "gemini-fake-001"
    assert fake.paths == [f"/v1beta/models/{MODEL}:generateContent"]
    assert fake.queries == [{}]
    assert fake.headers[0]["x-goog-api-key"] == KEY
    assert "authorization" not in fake.headers[0]


def test_usage_is_mapped(base: str, fake: FakeGemini) -> None:
    usage = complete(base, request()).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 7, 18)
    assert usage.prompt_tokens_details.cached_tokens == 4
    fake.thoughts = 5
    usage = complete(base, request()).usage
    assert usage is not None
    assert (usage.completion_tokens, usage.total_tokens) == (12, 23)
    assert usage.completion_tokens_details.reasoning_tokens == 5


def test_streamed_reply_matches_the_plain_one(base: str, fake: FakeGemini) -> None:
    chunks = stream(base, request(stream=True, stream_options={"include_usage": True}))
    assert fake.paths == [f"/v1beta/models/{MODEL}:streamGenerateContent"]
    assert fake.queries == [{"alt": "sse"}]
    assert fake.headers[0]["x-goog-api-key"] == KEY
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    assert text_of(chunks) == REPLY == complete(base, request()).choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 2  # really streamed
    assert finishes(chunks) == [(0, "stop")]
    assert chunks[-2].choices[0].finish_reason == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (11, 7, 18)
    assert len({c.id for c in chunks}) == 1
    assert json.loads(chunks[0].model_dump_json())["usage"] is None  # `usage: null` on all but the last


def test_stream_without_include_usage_has_no_usage_chunk(base: str) -> None:
    chunks = stream(base, request(stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices and c.usage is None for c in chunks)
    assert "usage" not in json.loads(chunks[0].model_dump_json())


def test_max_tokens_gives_length(base: str, fake: FakeGemini) -> None:
    result = complete(base, request(max_tokens=2))
    assert result.choices[0].message.content == "Hello from"
    assert result.choices[0].finish_reason == "length"
    assert finishes(stream(base, request(max_completion_tokens=2, stream=True))) == [(0, "length")]
    assert fake.requests[-1]["generationConfig"]["maxOutputTokens"] == 2


def test_two_candidates(base: str, fake: FakeGemini) -> None:
    result = complete(base, request(n=2))
    assert [c.index for c in result.choices] == [0, 1]
    assert [c.message.content for c in result.choices] == [REPLY, f"{REPLY} (take 2)"]
    assert fake.requests[0]["generationConfig"]["candidateCount"] == 2
    chunks = stream(base, request(n=2, stream=True))
    assert (text_of(chunks, 0), text_of(chunks, 1)) == (REPLY, f"{REPLY} (take 2)")
    assert sorted(finishes(chunks)) == [(0, "stop"), (1, "stop")]
    assert [c.choices[0].index for c in chunks if c.choices[0].delta.role] == [0, 1]


def test_prompt_blocked_for_safety(base: str, fake: FakeGemini) -> None:
    fake.then(GeminiBehaviour(block="prompt"), GeminiBehaviour(block="prompt"))
    result = complete(base, request())
    assert len(result.choices) == 1
    assert result.choices[0].message.content == ""
    assert result.choices[0].finish_reason == "content_filter"
    chunks = stream(base, request(stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert finishes(chunks) == [(0, "content_filter")]
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 11


def test_response_blocked_for_safety(base: str, fake: FakeGemini) -> None:
    fake.then(GeminiBehaviour(block="response"), GeminiBehaviour(block="response"))
    result = complete(base, request())
    assert result.choices[0].finish_reason == "content_filter"
    assert result.choices[0].message.content == ""
    assert finishes(stream(base, request(stream=True))) == [(0, "content_filter")]


# --- tools -------------------------------------------------------------------------------------


def test_tool_call_non_streamed(base: str, fake: FakeGemini) -> None:
    result = complete(base, request(tools=[WEATHER_TOOL]))
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and len(call.id) > 10
    assert (call.type, call.function.name, json.loads(call.function.arguments)) == ("function", "get_weather", {"x": 1})


def test_tool_call_streamed(base: str, fake: FakeGemini) -> None:
    chunks = stream(base, request(tools=[WEATHER_TOOL], stream=True))
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    assert len(deltas) == 2
    first, rest = deltas
    assert (first.index, first.type, first.function) == (0, "function", {"name": "get_weather", "arguments": ""})
    assert first.id is not None and first.id.startswith("call_")
    assert (rest.index, rest.id, rest.type) == (0, None, None)
    assert rest.function is not None and json.loads(rest.function["arguments"]) == {"x": 1}
    assert finishes(chunks) == [(0, "tool_calls")]
    assert json.loads(chunks[2].model_dump_json())["choices"][0]["delta"] == {"tool_calls": [rest.model_dump()]}


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        ({"type": "function", "function": {"name": "get_time"}}, {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
    ],
)
def test_tool_choice_modes(base: str, fake: FakeGemini, choice: Any, config: dict[str, Any]) -> None:
    result = complete(base, request(tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=choice))
    assert fake.requests[0]["toolConfig"] == {"functionCallingConfig": config}
    calls = result.choices[0].message.tool_calls
    if choice == "none":
        assert calls is None and result.choices[0].message.content == REPLY
    else:
        expected = "get_time" if isinstance(choice, dict) else "get_weather"
        assert calls is not None and calls[0].function.name == expected


def test_function_declarations(base: str, fake: FakeGemini) -> None:
    complete(base, request(tools=[WEATHER_TOOL, TIME_TOOL]))
    body = fake.requests[0]
    assert body["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather now",
         "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}},
        {"name": "get_time"},
    ]}]  # fmt: skip
    assert "toolConfig" not in body


# --- the translated request --------------------------------------------------------------------

CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
    {"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/photos/cat.webp?size=large"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/render"}},
    ]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]},
    {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
    {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'},
    {"role": "assistant", "content": "Sunny, 21°C at noon."},
    {"role": "user", "content": "Thanks"},
]  # fmt: skip


def test_conversation_is_translated(base: str, fake: FakeGemini) -> None:
    complete(base, request(messages=CONVERSATION, tools=[WEATHER_TOOL, TIME_TOOL]))
    body = fake.requests[0]
    assert body["system_instruction"] == {"parts": [{"text": "Be brief."}, {"text": "Answer in English."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [
            {"text": "What is in these?"},
            {"inline_data": {"mime_type": "image/png", "data": "iVBORw0KGgo="}},
            {"file_data": {"mime_type": "image/webp", "file_uri": "https://example.com/photos/cat.webp?size=large"}},
            {"file_data": {"mime_type": "image/jpeg", "file_uri": "https://example.com/render"}},
        ]},
        {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SKIP_SIGNATURE},
            {"functionCall": {"name": "get_time", "args": {}}, "thoughtSignature": SKIP_SIGNATURE},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_time", "response": {"content": "12:00"}}},
            {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
        ]},
        {"role": "model", "parts": [{"text": "Sunny, 21°C at noon."}]},
        {"role": "user", "parts": [{"text": "Thanks"}]},
    ]  # fmt: skip
    assert "generationConfig" not in body


def test_generation_config(base: str, fake: FakeGemini) -> None:
    complete(base, request(temperature=0.3, top_p=0.9, top_k=40, max_completion_tokens=50, max_tokens=10,
                           stop=["END", ""], presence_penalty=0.5, frequency_penalty=-0.5, seed=7,
                           response_format={"type": "json_object"}, min_p=0.1))  # fmt: skip
    assert fake.requests[0]["generationConfig"] == {
        "temperature": 0.3, "topP": 0.9, "topK": 40, "maxOutputTokens": 50, "stopSequences": ["END"],
        "presencePenalty": 0.5, "frequencyPenalty": -0.5, "seed": 7, "responseMimeType": "application/json",
    }  # fmt: skip
    complete(base, request(stop="STOP", top_k=0, response_format={"type": "text"}))
    assert fake.requests[1]["generationConfig"] == {"stopSequences": ["STOP"]}


FORECAST_SCHEMA: dict[str, Any] = {
    "type": "object", "title": "Forecast", "additionalProperties": False,
    "$defs": {"Day": {"type": "object", "title": "Day", "additionalProperties": False,
                      "properties": {"name": {"type": "string", "enum": ["mon", "tue"]},
                                     "high": {"type": "number", "description": "°C"}},
                      "required": ["name", "high"]}},
    "properties": {
        "city": {"type": "string", "description": "City name", "format": "email"},
        "days": {"type": "array", "items": {"$ref": "#/$defs/Day"}, "minItems": 1},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "title": "Note"},
        "when": {"type": "string", "format": "date-time"},
        "count": {"type": ["integer", "null"]},
    },
    "required": ["city", "days", "note"],
}  # fmt: skip
FORECAST_GEMINI: dict[str, Any] = {
    "type": "OBJECT",
    "properties": {
        "city": {"type": "STRING", "description": "City name"},
        "days": {"type": "ARRAY", "minItems": 1, "items": {
            "type": "OBJECT",
            "properties": {"name": {"type": "STRING", "enum": ["mon", "tue"]},
                           "high": {"type": "NUMBER", "description": "°C"}},
            "required": ["name", "high"], "propertyOrdering": ["name", "high"]}},
        "note": {"type": "STRING", "nullable": True},
        "when": {"type": "STRING", "format": "date-time"},
        "count": {"type": "INTEGER", "nullable": True},
    },
    "required": ["city", "days", "note"],
    "propertyOrdering": ["city", "days", "note", "when", "count"],
}  # fmt: skip


def test_response_schema_is_converted(base: str, fake: FakeGemini) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "forecast", "strict": True, "schema": FORECAST_SCHEMA}}
    complete(base, request(response_format=fmt))
    config = fake.requests[0]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == FORECAST_GEMINI


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"const": "yes"}, {"type": "STRING", "enum": ["yes"]}),
        ({"enum": ["a", None]}, {"type": "STRING", "enum": ["a"], "nullable": True}),
        (
            {"allOf": [{"$ref": "#/definitions/N"}], "description": "d", "definitions": {"N": {"type": "integer"}}},
            {"type": "INTEGER", "description": "d"},
        ),
        (
            {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}, {"type": "null"}]},
            {"anyOf": [{"type": "STRING"}, {"type": "INTEGER", "minimum": 0}], "nullable": True},
        ),
        (
            {"properties": {"a": {"items": {"type": "boolean"}}}},
            {"type": "OBJECT", "properties": {"a": {"type": "ARRAY", "items": {"type": "BOOLEAN"}}}},
        ),
        (
            {"type": "string", "nullable": True, "maxLength": 5, "pattern": "^a"},
            {"type": "STRING", "nullable": True, "maxLength": 5, "pattern": "^a"},
        ),
    ],
)
def test_schema_conversion(schema: dict[str, Any], expected: dict[str, Any]) -> None:
    assert gemini_schema(schema, param="response_format") == expected


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"not": {"type": "string"}}}},
        {
            "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
            "$ref": "#/$defs/Node",
        },
        {"$ref": "#/$defs/Missing"},
        {"type": ["string", "integer"]},
        {"type": "null"},
        {"description": "anything at all"},
        {"type": "integer", "enum": [1, 2]},
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"allOf": [{"type": "string"}, {"minLength": 1}]},
        {"anyOf": [{"type": "null"}]},
        {"type": "array", "prefixItems": [{"type": "string"}]},
    ],
)
def test_unsupported_schema_is_a_400(base: str, fake: FakeGemini, schema: dict[str, Any]) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    error = complete_failure(base, request(response_format=fmt))
    assert (error.status, error.param, error.retryable) == (400, "response_format", False)
    assert fake.requests == []  # refused before anything was sent


def test_unsupported_tool_schema_is_a_400(base: str, fake: FakeGemini) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object",
            "properties": {"a": {"type": "string", "if": {"const": "x"}}}}}}  # fmt: skip
    error = complete_failure(base, request(tools=[tool]))
    assert (error.status, error.param, error.retryable) == (400, "tools", False)
    _, error = stream_failure(base, request(tools=[tool], stream=True))
    assert (error.status, error.param) == (400, "tools")
    assert fake.requests == []


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "1"}]}, "messages[0].tool_call_id"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"logprobs": True}, "logprobs"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]},
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]},
            "messages[0].content[0]",
        ),
        ({"tools": [{"type": "custom", "custom": {"name": "c"}}]}, "tools[0]"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
            "tools[0].function.parameters",
        ),
        (
            {"tools": [WEATHER_TOOL], "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto"}}},
            "tool_choice",
        ),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"messages": [{"role": "function", "name": "f", "content": "1"}]}, "messages[0].role"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}]},
            "messages[0].tool_calls[0]",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,x"}}]}
                ]
            },
            "messages[0].content[0]",
        ),
    ],
)
def test_untranslatable_requests_are_400(base: str, fake: FakeGemini, fields: dict[str, Any], param: str) -> None:
    error = complete_failure(base, request(**fields))
    assert (error.status, error.param, error.retryable, error.type) == (400, param, False, "invalid_request_error")
    assert fake.requests == []


def test_audio_and_file_parts(base: str, fake: FakeGemini) -> None:
    content = [
        {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
    ]
    complete(base, request(messages=[{"role": "user", "content": content}]))
    assert fake.requests[0]["contents"][0]["parts"] == [
        {"inline_data": {"mime_type": "audio/mp3", "data": "SUQz"}},
        {"inline_data": {"mime_type": "application/pdf", "data": "JVBERi0="}},
    ]


def test_models(base: str) -> None:
    async def listed(backend: GeminiBackend) -> list[str]:
        return [model.id for model in backend.models()]

    assert with_backend(base, listed) == [f"gemini/{MODEL}"]


def test_sse_data_joins_multiline_events() -> None:
    async def events() -> list[str]:
        response = httpx.Response(200, content=b'data: {"a":\r\ndata: 1}\r\n\r\n: comment\r\ndata: {}')
        return [data async for data in sse_data(response)]

    assert asyncio.run(events()) == ['{"a":\n1}', "{}"]


def test_base_url_variants_and_model_prefix(base: str, fake: FakeGemini) -> None:
    complete(f"{base}/v1beta/", request(), model="models/gemini-2.5-flash")
    assert fake.paths == ["/v1beta/models/gemini-2.5-flash:generateContent"]


# --- errors ------------------------------------------------------------------------------------

ERRORS = [
    # behaviour, client status, type, code, retryable, retry_after
    (GeminiBehaviour(status=400), 400, "invalid_request_error", "invalid_argument", False, None),
    (GeminiBehaviour(status=400, error_code="FAILED_PRECONDITION"), 400, "invalid_request_error",
     "failed_precondition", False, None),
    (GeminiBehaviour(status=400, reason="API_KEY_INVALID"), 502, "upstream_auth_error", "upstream_auth_failed", False,
     None),
    (GeminiBehaviour(status=401), 502, "upstream_auth_error", "upstream_auth_failed", False, None),
    (GeminiBehaviour(status=403), 502, "upstream_auth_error", "upstream_auth_failed", False, None),
    (GeminiBehaviour(status=404), 404, "invalid_request_error", "not_found", False, None),
    (GeminiBehaviour(status=429, retry_after="7"), 429, "requests", "rate_limit_exceeded", True, 7.0),
    (GeminiBehaviour(status=429, retry_delay="3.5s"), 429, "requests", "rate_limit_exceeded", True, 3.5),
    (GeminiBehaviour(status=500), 500, "server_error", "internal", True, None),
    (GeminiBehaviour(status=503, retry_after="2"), 503, "server_error", "unavailable", True, 2.0),
    (GeminiBehaviour(status=504), 504, "server_error", "deadline_exceeded", True, None),
]  # fmt: skip


@pytest.mark.parametrize(("behaviour", "status", "type_", "code", "retryable", "wait"), ERRORS)
@pytest.mark.parametrize("streamed", [False, True])
def test_error_mapping(base: str, fake: FakeGemini, behaviour: GeminiBehaviour, status: int, type_: str,
                       code: str, retryable: bool, wait: float | None, streamed: bool) -> None:  # fmt: skip
    fake.then(behaviour)
    if streamed:
        chunks, error = stream_failure(base, request(stream=True))
        assert chunks == []  # raised before the first chunk
    else:
        error = complete_failure(base, request())
    assert (error.status, error.type, error.code, error.retryable, error.retry_after) == (
        status, type_, code, retryable, wait)  # fmt: skip
    assert KEY not in error.message


def test_wrong_key_is_an_auth_error_without_the_key(base: str, fake: FakeGemini) -> None:
    fake.api_key = "the-right-key"
    error = complete_failure(base, request())
    assert (error.status, error.type, error.retryable) == (502, "upstream_auth_error", False)
    assert KEY not in str(error.body()) and KEY not in repr(UpstreamConfig("gemini", MODEL, base, api_key=KEY))


def test_upstream_message_never_echoes_the_key() -> None:
    body = {"error": {"code": 400, "message": f"Bad request for key {KEY}.", "status": "INVALID_ARGUMENT"}}
    error = map_error(400, body, httpx.Headers(), "gemini", KEY, dialect=GEMINI)
    assert KEY not in error.message and "[redacted]" in error.message


@pytest.mark.parametrize("streamed", [False, True])
def test_connection_reset(base: str, fake: FakeGemini, streamed: bool) -> None:
    fake.then(Behaviour(reset=True))
    error = stream_failure(base, request(stream=True))[1] if streamed else complete_failure(base, request())
    assert (error.status, error.code, error.retryable) == (502, "upstream_unreachable", True)


def test_connection_refused(fake: FakeGemini) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    error = complete_failure(closed, request())
    assert (error.status, error.code, error.retryable) == (502, "upstream_unreachable", True)
    _, error = stream_failure(closed, request(stream=True))
    assert (error.status, error.code, error.retryable) == (502, "upstream_unreachable", True)


def test_timeout(base: str, fake: FakeGemini) -> None:
    fake.then(Behaviour(delay=2.0))
    error = complete_failure(base, request(), timeout=0.3)
    assert (error.status, error.code, error.retryable) == (504, "upstream_timeout", True)


def test_malformed_json(base: str, fake: FakeGemini) -> None:
    fake.then(Behaviour(malformed=True), Behaviour(malformed=True))
    error = complete_failure(base, request())
    assert (error.status, error.code) == (502, "upstream_malformed_response")
    chunks, error = stream_failure(base, request(stream=True))
    assert chunks == [] and (error.status, error.code, error.retryable) == (502, "upstream_malformed_response", True)


@pytest.mark.parametrize("style", ["reset", "clean"])
def test_stream_cut(base: str, fake: FakeGemini, style: Any) -> None:
    fake.then(GeminiBehaviour(cut_after=2, cut_style=style))
    chunks, error = stream_failure(base, request(stream=True))
    assert chunks[0].choices[0].delta.role == "assistant" and text_of(chunks) == "Hello from"
    assert (error.status, error.code, error.retryable) == (502, "upstream_stream_cut", False)


def test_error_event_mid_stream(base: str, fake: FakeGemini) -> None:
    fake.then(GeminiBehaviour(cut_after=1, cut_style="error"))
    chunks, error = stream_failure(base, request(stream=True))
    assert text_of(chunks) == "Hello"
    assert (error.status, error.code, error.retryable) == (503, "unavailable", False)  # chunks already went out
