"""End to end through the Anthropic and Gemini providers: a real chatgate server, driven with the
official openai SDK, in front of the fake Anthropic and Gemini APIs on loopback.

Each test runs once per provider (``anthropic/claude-e2e``, ``gemini/gemini-e2e``, routed directly)
unless it is about one of them: plain and streamed completions, tools (streamed ones reassembled by
the SDK's own ``ChatCompletionStreamState``), JSON mode, images, usage, every error as the SDK sees
it, retries, and fallbacks from one provider to the other (configured ``upstream_models``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any, cast

import httpx
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionToolParam
from pydantic import BaseModel

from chatgate.config import Settings, load_settings
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini, GeminiBehaviour
from tests.fakes.openai_upstream import Behaviour
from tests.fakes.server import FakeServer
from tests.serving import ServerThread, all_running, serve

ANTHROPIC_KEY = "sk-ant-e2e-0123456789"
GEMINI_KEY = "gm-e2e-0123456789"
CLAUDE = "anthropic/claude-e2e"
GEMINI = "gemini/gemini-e2e"
HI: list[Any] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}},
}
FORECAST = {"city": "Paris", "days": 3}
"""The fake Anthropic's tool input, and what the fake Gemini is told to answer in JSON mode."""
PNG = "data:image/png;base64,iVBORw0KGgo="


class Forecast(BaseModel):
    city: str
    days: int


def e2e_settings(anthropic_url: str, gemini_url: str) -> Settings:
    base = load_settings(env={})
    data = {
        "retry_backoff_seconds": 0.01,
        "providers": {
            "anthropic": {"base_url": anthropic_url, "api_key": ANTHROPIC_KEY},
            "gemini": {"base_url": gemini_url, "api_key": GEMINI_KEY},
        },
        "upstream_models": [
            {"name": "claude-or-gemini", "deployments": [{"provider": "anthropic", "model": "claude-e2e"}],
             "retries": 1, "fallbacks": [GEMINI]},
            {"name": "gemini-or-claude", "deployments": [{"provider": "gemini", "model": "gemini-e2e"}],
             "retries": 1, "fallbacks": [CLAUDE]},
        ],
    }  # fmt: skip
    models = [m.model_copy(update={"n_ctx": 1024, "parallel": 2}) for m in base.models]
    return Settings.model_validate({**base.model_dump(), **data, "models": [m.model_dump() for m in models]})


@dataclass
class Provider:
    """One provider as the tests see it: its model name, its fake, and its ways of failing."""

    name: str
    model: str
    fake: FakeAnthropic | FakeGemini
    overloaded: Behaviour
    rate_limited: Behaviour
    """A 429 asking for a 0.2 s pause, in the provider's own way."""
    auth_failures: list[Behaviour] = field(default_factory=list)
    mid_stream_error: Behaviour = field(default_factory=Behaviour)
    """An error event after the first chunks, with the key it was sent in its message."""

    @property
    def reply(self) -> str:
        return self.fake.reply

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.fake.requests

    def then(self, *behaviours: Behaviour) -> None:
        self.fake.then(*behaviours)

    def answer_json(self) -> None:
        """Make the fake's JSON-mode answer :data:`FORECAST` (the fake Anthropic always does)."""
        if isinstance(self.fake, FakeGemini):
            self.fake.reply = json.dumps(FORECAST)


@dataclass
class Fakes:
    anthropic: FakeAnthropic
    gemini: FakeGemini

    def reset(self) -> None:
        self.anthropic.reset()
        fresh = FakeGemini(api_key=GEMINI_KEY)
        for f in fields(fresh):
            setattr(self.gemini, f.name, getattr(fresh, f.name))

    def provider(self, name: str) -> Provider:
        if name == "anthropic":
            return Provider("anthropic", CLAUDE, self.anthropic, overloaded=Behaviour(status=529),
                            rate_limited=Behaviour(status=429, retry_after_ms="200"),
                            auth_failures=[Behaviour(status=401)],
                            mid_stream_error=Behaviour(error_code="api_error", error_after=4,
                                                       echo_key=True))  # fmt: skip
        return Provider("gemini", GEMINI, self.gemini, overloaded=GeminiBehaviour(status=503),
                        rate_limited=GeminiBehaviour(status=429, retry_delay="0.2s"),
                        auth_failures=[GeminiBehaviour(status=401),
                                       GeminiBehaviour(status=400, reason="API_KEY_INVALID")],
                        mid_stream_error=GeminiBehaviour(cut_after=2, cut_style="error", echo_key=True))  # fmt: skip


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Fakes, ServerThread]]:
    fakes = Fakes(FakeAnthropic(), FakeGemini(api_key=GEMINI_KEY))
    with (
        all_running(FakeServer(fake.app()) for fake in (fakes.anthropic, fakes.gemini)) as upstreams,
        serve(e2e_settings(upstreams[0].url, upstreams[1].url)) as gateway,
    ):
        yield fakes, gateway


@pytest.fixture
def fakes(served: tuple[Fakes, ServerThread]) -> Fakes:
    served[0].reset()
    return served[0]


@pytest.fixture(params=["anthropic", "gemini"])
def provider(request: pytest.FixtureRequest, fakes: Fakes) -> Provider:
    return fakes.provider(cast(str, request.param))


@pytest.fixture
def sdk(served: tuple[Fakes, ServerThread]) -> Iterator[openai.OpenAI]:
    """The official SDK, its own retries off: every retry seen here is chatgate's."""
    with openai.OpenAI(base_url=f"{served[1].base_url}/v1", api_key="client-key", max_retries=0, timeout=30) as c:
        yield c


def complete(sdk: openai.OpenAI, model: str, **kwargs: Any) -> ChatCompletion:
    completion: ChatCompletion = sdk.chat.completions.create(model=model, messages=kwargs.pop("messages", HI), **kwargs)
    return completion


def stream(sdk: openai.OpenAI, model: str, **kwargs: Any) -> list[ChatCompletionChunk]:
    chunks = sdk.chat.completions.create(model=model, messages=kwargs.pop("messages", HI), stream=True, **kwargs)
    return list(chunks)


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def reassemble(chunks: list[ChatCompletionChunk], tools: list[ChatCompletionToolParam]) -> Any:
    """The stream as the SDK's own accumulator puts it back together."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState(input_tools=tools)
    for chunk in chunks:
        state.handle_chunk(chunk)
    return state.get_final_completion()


def calls_of(completion: Any) -> list[tuple[str, str]]:
    return [(c.function.name, c.function.arguments) for c in completion.choices[0].message.tool_calls or []]


# --- answers ----------------------------------------------------------------------------------------


def test_a_plain_completion(sdk: openai.OpenAI, provider: Provider) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model=provider.model, messages=HI, temperature=0.5)
    r = raw.parse()
    assert r.model == provider.model and r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == provider.reply
    assert r.choices[0].finish_reason == "stop"
    assert raw.headers["x-chatgate-attempts"] == "1"
    sent = provider.requests[0]
    if isinstance(provider.fake, FakeAnthropic):
        assert (sent["model"], sent["system"], sent["temperature"]) == ("claude-e2e", "Be brief.", 0.5)
        assert sent["messages"] == [{"role": "user", "content": "Hi"}]
        assert provider.fake.headers[0]["x-api-key"] == ANTHROPIC_KEY
    else:
        assert provider.fake.paths[0] == "/v1beta/models/gemini-e2e:generateContent"
        assert sent["system_instruction"] == {"parts": [{"text": "Be brief."}]}
        assert sent["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]}]
        assert sent["generationConfig"] == {"temperature": 0.5}
        assert provider.fake.headers[0]["x-goog-api-key"] == GEMINI_KEY
        assert "key" not in provider.fake.queries[0]  # the key never travels in the URL


def test_a_stream_says_what_the_plain_completion_says(sdk: openai.OpenAI, provider: Provider) -> None:
    plain = complete(sdk, provider.model)
    chunks = stream(sdk, provider.model, stream_options={"include_usage": True})
    assert text_of(chunks) == plain.choices[0].message.content == provider.reply
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # streamed, not one lump
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert {c.model for c in chunks} == {provider.model}
    assert len({c.id for c in chunks}) == 1
    last = chunks[-1]
    assert last.choices == [] and last.usage == plain.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_a_stream_without_include_usage_has_no_usage_chunk(sdk: openai.OpenAI, provider: Provider) -> None:
    chunks = stream(sdk, provider.model)
    assert text_of(chunks) == provider.reply
    assert all(c.choices and c.usage is None for c in chunks)


def test_anthropic_usage_counts_cache_reads_and_writes_as_prompt_tokens(sdk: openai.OpenAI, fakes: Fakes) -> None:
    fakes.anthropic.cache_read, fakes.anthropic.cache_creation = 5, 2
    usage = complete(sdk, CLAUDE).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11 + 5 + 2, 7, 25)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 5
    assert stream(sdk, CLAUDE, stream_options={"include_usage": True})[-1].usage == usage


def test_gemini_usage_counts_thoughts_as_reasoning_tokens(sdk: openai.OpenAI, fakes: Fakes) -> None:
    fakes.gemini.thoughts = 3
    usage = complete(sdk, GEMINI).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 7 + 3, 21)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 4
    assert usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 3
    assert stream(sdk, GEMINI, stream_options={"include_usage": True})[-1].usage == usage


# --- tools ------------------------------------------------------------------------------------------


def test_tool_calls_streamed_reassemble_to_the_plain_ones(sdk: openai.OpenAI, provider: Provider) -> None:
    tools = [WEATHER, TIME]
    plain = complete(sdk, provider.model, tools=tools)
    streamed = reassemble(stream(sdk, provider.model, tools=tools), tools)
    calls = calls_of(plain)
    assert calls and calls_of(streamed) == calls
    assert plain.choices[0].finish_reason == streamed.choices[0].finish_reason == "tool_calls"
    assert streamed.choices[0].message.content in (None, "")
    if isinstance(provider.fake, FakeAnthropic):  # one call per tool, each with the fake's input
        assert calls == [("get_weather", json.dumps(FORECAST)), ("get_time", json.dumps(FORECAST))]
        assert [t["name"] for t in provider.requests[0]["tools"]] == ["get_weather", "get_time"]
    else:  # the fake Gemini calls the first function
        assert calls == [("get_weather", json.dumps({"x": 1}))]
        declared = provider.requests[0]["tools"][0]["functionDeclarations"]
        assert [d["name"] for d in declared] == ["get_weather", "get_time"]
    message = plain.choices[0].message
    assert message.tool_calls is not None and streamed.choices[0].message.tool_calls is not None
    for a, b in zip(message.tool_calls, streamed.choices[0].message.tool_calls, strict=True):
        assert a.type == b.type == "function" and a.id and b.id


def test_a_forced_tool_is_called_and_finishes_with_stop(sdk: openai.OpenAI, provider: Provider) -> None:
    tools = [WEATHER, TIME]
    choice: Any = {"type": "function", "function": {"name": "get_time"}}
    plain = complete(sdk, provider.model, tools=tools, tool_choice=choice)
    streamed = reassemble(stream(sdk, provider.model, tools=tools, tool_choice=choice), tools)
    assert [name for name, _ in calls_of(plain)] == ["get_time"]
    assert calls_of(streamed) == calls_of(plain)
    assert plain.choices[0].finish_reason == streamed.choices[0].finish_reason == "stop"  # as OpenAI answers


def test_a_tool_result_goes_back_in_the_providers_format(sdk: openai.OpenAI, provider: Provider) -> None:
    first = complete(sdk, provider.model, tools=[WEATHER])
    message = first.choices[0].message
    assert message.tool_calls is not None
    call = message.tool_calls[0]
    history: list[Any] = [*HI, message.model_dump(exclude_none=True),
                          {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'}]  # fmt: skip
    second = complete(sdk, provider.model, messages=history, tools=[WEATHER], tool_choice="none")
    assert second.choices[0].message.content == provider.reply
    sent = provider.requests[1]
    if isinstance(provider.fake, FakeAnthropic):
        assert sent["messages"][1]["content"] == [{"type": "tool_use", "id": call.id, "name": "get_weather",
                                                   "input": FORECAST}]  # fmt: skip
        assert sent["messages"][2] == {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": '{"temp_c": 21}'}]}  # fmt: skip
    else:
        assert sent["contents"][1]["parts"][0]["functionCall"] == {"name": "get_weather", "args": {"x": 1}}
        assert sent["contents"][2] == {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}]}  # fmt: skip


# --- JSON mode --------------------------------------------------------------------------------------


def test_json_object_mode(sdk: openai.OpenAI, provider: Provider) -> None:
    provider.answer_json()
    fmt: Any = {"type": "json_object"}
    plain = complete(sdk, provider.model, response_format=fmt)
    chunks = stream(sdk, provider.model, response_format=fmt)
    content = plain.choices[0].message.content
    assert content is not None and json.loads(content) == FORECAST
    assert text_of(chunks) == content
    assert plain.choices[0].finish_reason == "stop" and plain.choices[0].message.tool_calls is None
    sent = provider.requests[0]
    if isinstance(provider.fake, FakeAnthropic):  # a forced tool carries the JSON answer
        assert [t["name"] for t in sent["tools"]] == ["json_output"]
        assert sent["tool_choice"]["name"] == "json_output"
    else:
        assert sent["generationConfig"] == {"responseMimeType": "application/json"}


def test_json_schema_mode_with_the_sdks_parse(sdk: openai.OpenAI, provider: Provider) -> None:
    provider.answer_json()
    parsed = sdk.chat.completions.parse(model=provider.model, messages=HI, response_format=Forecast)
    assert parsed.choices[0].message.parsed == Forecast.model_validate(FORECAST)
    with sdk.chat.completions.stream(model=provider.model, messages=HI, response_format=Forecast) as events:
        final = events.get_final_completion()
    assert final.choices[0].message.parsed == Forecast.model_validate(FORECAST)
    sent = provider.requests[0]
    if isinstance(provider.fake, FakeAnthropic):
        schema = sent["tools"][0]["input_schema"]
        assert set(schema["properties"]) == {"city", "days"} and schema["required"] == ["city", "days"]
    else:
        schema = sent["generationConfig"]["responseSchema"]
        assert schema["type"] == "OBJECT" and schema["propertyOrdering"] == ["city", "days"]
        assert schema["properties"]["days"] == {"type": "INTEGER"}


# --- images -----------------------------------------------------------------------------------------


def test_image_parts_reach_the_provider(sdk: openai.OpenAI, provider: Provider) -> None:
    look: list[Any] = [{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp", "detail": "low"}},
    ]}]  # fmt: skip
    r = complete(sdk, provider.model, messages=look)
    assert r.choices[0].message.content == provider.reply
    sent = provider.requests[0]
    if isinstance(provider.fake, FakeAnthropic):
        assert sent["messages"][0]["content"] == [
            {"type": "text", "text": "What is in these?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.webp"}},
        ]
    else:
        assert sent["contents"][0]["parts"] == [
            {"text": "What is in these?"},
            {"inline_data": {"mime_type": "image/png", "data": "iVBORw0KGgo="}},
            {"file_data": {"mime_type": "image/webp", "file_uri": "https://example.com/cat.webp"}},
        ]


@pytest.mark.parametrize("streamed", [False, True])
def test_image_parts_sent_to_the_local_model_are_a_clear_400(sdk: openai.OpenAI, fakes: Fakes, streamed: bool) -> None:
    look: list[Any] = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                    {"type": "image_url", "image_url": {"url": PNG}}]}]  # fmt: skip
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="gpt-4", messages=look, stream=streamed)
    assert err.value.code == "unsupported_content" and err.value.param == "messages[0].content[1].type"
    assert "image" in err.value.message
    assert not fakes.anthropic.requests and not fakes.gemini.requests


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
def test_a_429_is_retried_as_asked_then_a_rate_limit_error(
    sdk: openai.OpenAI, provider: Provider, streamed: bool
) -> None:
    provider.then(*[provider.rate_limited] * 3)
    start = time.monotonic()
    with pytest.raises(openai.RateLimitError) as err:
        sdk.chat.completions.create(model=provider.model, messages=HI, stream=streamed)
    assert time.monotonic() - start >= 2 * 0.2  # two waits of the 0.2 s the provider asked for
    assert len(provider.requests) == 3  # the first attempt and two retries
    headers = err.value.response.headers
    assert headers["x-chatgate-attempts"] == "3" and headers["retry-after"] == "1"
    body = err.value.body
    assert isinstance(body, dict) and (body["type"], body["code"]) == ("requests", "rate_limit_exceeded")


@pytest.mark.parametrize("streamed", [False, True])
def test_an_overloaded_provider_is_retried_then_a_503(sdk: openai.OpenAI, provider: Provider, streamed: bool) -> None:
    provider.then(*[provider.overloaded] * 3)
    with pytest.raises(openai.InternalServerError) as err:
        sdk.chat.completions.create(model=provider.model, messages=HI, stream=streamed)
    assert err.value.status_code == 503
    assert len(provider.requests) == 3
    assert err.value.response.headers["x-chatgate-attempts"] == "3"


def test_credentials_refused_upstream_are_a_502_never_retried(sdk: openai.OpenAI, provider: Provider) -> None:
    for failure in provider.auth_failures:
        provider.requests.clear()
        provider.then(failure)
        with pytest.raises(openai.APIStatusError) as err:
            complete(sdk, provider.model)
        assert err.value.status_code == 502
        body = err.value.body
        assert isinstance(body, dict) and body["type"] == "upstream_auth_error"
        assert ANTHROPIC_KEY not in json.dumps(body) and GEMINI_KEY not in json.dumps(body)
        assert len(provider.requests) == 1
        assert err.value.response.headers["x-chatgate-attempts"] == "1"


@pytest.mark.parametrize("streamed", [False, True])
def test_a_400_is_a_bad_request_never_retried(sdk: openai.OpenAI, provider: Provider, streamed: bool) -> None:
    provider.then(Behaviour(status=400))
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model=provider.model, messages=HI, stream=streamed)
    body = err.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error"
    assert len(provider.requests) == 1
    assert err.value.response.headers["x-chatgate-attempts"] == "1"


@pytest.mark.parametrize("how", ["answer", "streamed-answer", "mid-stream-event"])
def test_a_key_the_provider_echoes_never_reaches_the_client(
    served: tuple[Fakes, ServerThread], provider: Provider, how: str
) -> None:
    provider.then(provider.mid_stream_error if how == "mid-stream-event" else Behaviour(status=400, echo_key=True))
    body = {"model": provider.model, "messages": HI, "stream": how != "answer"}
    with httpx.Client(base_url=served[1].base_url, timeout=30) as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == (200 if how == "mid-stream-event" else 400) and len(provider.requests) == 1
    for key in (ANTHROPIC_KEY, GEMINI_KEY):
        assert key.encode() not in response.content
    assert b"(key: [redacted])" in response.content  # the provider did echo it, and it was masked


def test_a_request_the_provider_cannot_take_is_a_400_before_any_call(sdk: openai.OpenAI, provider: Provider) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        complete(sdk, provider.model, logprobs=True)
    assert err.value.param == "logprobs"
    assert not provider.requests


@pytest.mark.parametrize("failure", ["server_error", "overloaded", "reset"])
def test_a_retryable_failure_then_success(sdk: openai.OpenAI, provider: Provider, failure: str) -> None:
    first = {"server_error": Behaviour(status=500), "overloaded": provider.overloaded,
             "reset": Behaviour(reset=True)}[failure]  # fmt: skip
    provider.then(first)
    raw = sdk.chat.completions.with_raw_response.create(model=provider.model, messages=HI)
    assert raw.headers["x-chatgate-attempts"] == "2"
    assert raw.parse().choices[0].message.content == provider.reply
    assert len(provider.requests) == 2


def test_a_stream_that_fails_before_its_first_chunk_is_retried(sdk: openai.OpenAI, provider: Provider) -> None:
    if isinstance(provider.fake, FakeAnthropic):  # an overload reported inside a stream that answered 200
        provider.then(Behaviour(error_code="overloaded_error"))
    else:  # an error event as the stream's first event
        provider.then(GeminiBehaviour(cut_after=0, cut_style="error"))
    raw = sdk.chat.completions.with_raw_response.create(model=provider.model, messages=HI, stream=True)
    assert raw.headers["x-chatgate-attempts"] == "2"
    chunks = list(raw.parse())
    assert text_of(chunks) == provider.reply
    assert len(provider.requests) == 2


def test_a_stream_cut_after_its_first_chunk_ends_with_an_error_and_is_not_retried(
    sdk: openai.OpenAI, fakes: Fakes, provider: Provider
) -> None:
    provider.then(Behaviour(cut_after=4) if provider.name == "anthropic" else GeminiBehaviour(cut_after=2))
    received: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIError) as err:  # the SDK raises the error event that ends the stream
        received.extend(sdk.chat.completions.create(model=provider.model, messages=HI, stream=True))
    assert received and received[0].choices[0].delta.role == "assistant"
    assert err.value.code == "upstream_stream_cut"
    assert len(provider.requests) == 1 and len(fakes.anthropic.requests) + len(fakes.gemini.requests) == 1


# --- fallbacks between providers ----------------------------------------------------------------------


@pytest.mark.parametrize(("model", "failing", "fallback"), [("claude-or-gemini", "anthropic", GEMINI),
                                                            ("gemini-or-claude", "gemini", CLAUDE)])  # fmt: skip
def test_a_failing_provider_falls_back_to_the_other(
    sdk: openai.OpenAI, fakes: Fakes, model: str, failing: str, fallback: str
) -> None:
    down, up = fakes.provider(failing), fakes.provider("gemini" if failing == "anthropic" else "anthropic")
    down.then(*[down.overloaded] * 2)
    raw = sdk.chat.completions.with_raw_response.create(model=model, messages=HI)
    r = raw.parse()
    assert r.model == fallback and r.choices[0].message.content == up.reply
    assert raw.headers["x-chatgate-attempts"] == "3"  # the model's own attempt and retry, then its fallback
    assert (len(down.requests), len(up.requests)) == (2, 1)


def test_a_failing_anthropic_stream_falls_back_to_gemini(sdk: openai.OpenAI, fakes: Fakes) -> None:
    fakes.anthropic.then(Behaviour(status=529), Behaviour(status=500))
    chunks = stream(sdk, "claude-or-gemini", stream_options={"include_usage": True})
    assert text_of(chunks) == fakes.gemini.reply
    assert {c.model for c in chunks} == {GEMINI}
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 18


def test_an_answer_from_the_first_provider_names_the_model_asked_for(sdk: openai.OpenAI, fakes: Fakes) -> None:
    r = complete(sdk, "claude-or-gemini")
    assert r.model == "claude-or-gemini" and r.choices[0].message.content == fakes.anthropic.reply
    assert not fakes.gemini.requests


def test_refused_credentials_do_not_fall_back(sdk: openai.OpenAI, fakes: Fakes) -> None:
    fakes.anthropic.then(Behaviour(status=401))
    with pytest.raises(openai.APIStatusError) as err:
        complete(sdk, "claude-or-gemini")
    assert err.value.status_code == 502
    assert len(fakes.anthropic.requests) == 1 and not fakes.gemini.requests


def test_a_request_fallback_to_the_other_provider(sdk: openai.OpenAI, fakes: Fakes) -> None:
    fakes.gemini.then(GeminiBehaviour(status=500))
    r = complete(sdk, GEMINI, extra_body={"retries": 0, "fallback_models": [CLAUDE]})
    assert r.model == CLAUDE and r.choices[0].message.content == fakes.anthropic.reply
    assert len(fakes.gemini.requests) == 1
