"""The in-process client: the SDK's interface with the router in the caller's process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

import chatgate
from chatgate.config import Settings, load_settings
from chatgate.errors import InvalidRequestError, ModelNotFoundError
from chatgate.protocol import ChatCompletion, ChatCompletionChunk
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import Behaviour, FakeOpenAI
from tests.fakes.server import FakeServer
from tests.routing.conftest import FAKEAI_KEY, routing_settings
from tests.serving import all_running

ASK: list[Any] = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def fakes() -> Iterator[list[FakeOpenAI]]:
    items = [FakeOpenAI(reply=f"Hello from {n}.") for n in ("a", "b", "c")]
    # FAKEAI_KEY: set while this module's clients build their routes, restored after
    with all_running(FakeServer(f.app()) for f in items) as servers, pytest.MonkeyPatch.context() as env:
        for fake, server in zip(items, servers, strict=True):
            fake.port = server.port
        env.setenv("FAKEAI_KEY", FAKEAI_KEY)
        yield items


@pytest.fixture(scope="module")
def client(fakes: list[FakeOpenAI]) -> Iterator[chatgate.OpenAI]:
    urls = [f"http://127.0.0.1:{s}" for s in _ports(fakes)]
    with chatgate.OpenAI(settings=routing_settings(*urls)) as c:
        yield c


def _ports(fakes: list[FakeOpenAI]) -> list[int]:
    return [f.port for f in fakes]


def test_sync_create_with_the_local_model(client: chatgate.OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4", messages=ASK, max_tokens=5, temperature=0)
    assert isinstance(r, ChatCompletion)
    assert r.model == "smollm2-135m-instruct" and r.usage is not None and r.usage.completion_tokens <= 5


def test_sync_streaming(client: chatgate.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4", messages=ASK, max_tokens=5, stream=True))
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_fallbacks_retries_and_timeout_parameters(client: chatgate.OpenAI, fakes: list[FakeOpenAI]) -> None:
    fakes[2].then(Behaviour(status=503))
    r = client.chat.completions.create(model="third", messages=ASK, retries=0, fallback_models=["secondary"],
                                       timeout=10)  # fmt: skip
    assert isinstance(r, ChatCompletion)
    assert r.model == "secondary" and r.choices[0].message.content == "Hello from b."


def test_errors_are_chatgates_own(client: chatgate.OpenAI) -> None:
    with pytest.raises(ModelNotFoundError):
        client.chat.completions.create(model="nope", messages=ASK)
    with pytest.raises(InvalidRequestError) as err:
        client.chat.completions.create(model="gpt-4", messages=ASK, temperature=5)
    assert err.value.param == "temperature"


def test_async_client(fakes: list[FakeOpenAI]) -> None:
    urls = [f"http://127.0.0.1:{s}" for s in _ports(fakes)]

    async def run() -> tuple[str | None, str]:
        async with chatgate.AsyncOpenAI(settings=routing_settings(*urls)) as client:
            r = await client.chat.completions.create(model="primary", messages=ASK)
            stream = await client.chat.completions.create(model="primary", messages=ASK, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        return r.choices[0].message.content, text

    assert asyncio.run(run()) == ("Hello from a.", "Hello from a.")


# --- OneLLM's documented examples, as written ---------------------------------------------------
# From muxi-ai/onellm: docs/api/chat-completions.md, docs/quickstart.md, docs/providers/setup.md,
# docs/api/client.md. Its ``openai/...`` names are aliased to the real local model here; the other
# providers' names reach the fake Anthropic, Gemini and OpenAI-compatible (Groq, Mistral) servers.

LOCAL = "smollm2-135m-instruct"
OPENAI_NAMES = ["openai/gpt-4o-mini", "openai/gpt-4", "openai/gpt-4o"]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get current weather",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}


def onellm_settings(anthropic_url: str, gemini_url: str, compatible: str) -> Settings:
    base = load_settings(env={})
    providers = {
        "anthropic": {"base_url": anthropic_url, "api_key": "sk-ant-onellm"},
        "google": {"base_url": gemini_url, "api_key": "gm-onellm"},
        "groq": {"base_url": compatible, "api_key": "gsk-onellm"},
        "mistral": {"base_url": compatible, "api_key": "mistral-onellm"},
    }
    models = [m.model_copy(update={"n_ctx": 1024, "parallel": 2}).model_dump() for m in base.models]
    aliases = {**base.aliases, **dict.fromkeys(OPENAI_NAMES, LOCAL)}
    return Settings.model_validate(
        {
            **base.model_dump(),
            "providers": providers,
            "models": models,
            "aliases": aliases,
            "retry_backoff_seconds": 0.01,
        }
    )


@pytest.fixture(scope="module")
def onellm(fakes: list[FakeOpenAI]) -> Iterator[chatgate.OpenAI]:
    extracted = {"name": "John Doe", "age": 30, "email": "john@example.com"}
    anthropic, gemini = FakeAnthropic(), FakeGemini(api_key="gm-onellm", reply=json.dumps(extracted))
    with all_running(FakeServer(fake.app()) for fake in (anthropic, gemini)) as servers:
        settings = onellm_settings(servers[0].url, servers[1].url, f"http://127.0.0.1:{fakes[0].port}/v1")
        with chatgate.OpenAI(settings=settings) as client:
            yield client


@pytest.mark.parametrize(
    "model",
    ["openai/gpt-4o-mini", "anthropic/claude-3-5-sonnet-20241022", "google/gemini-1.5-flash", "groq/llama3-8b-8192"],
)
def test_onellm_first_chat_and_the_standard_response(onellm: chatgate.OpenAI, model: str) -> None:
    response = onellm.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello, how are you?"}], max_tokens=20
    )
    assert isinstance(response, ChatCompletion)
    content = response.choices[0].message["content"]
    assert isinstance(content, str) and content and content == response.choices[0].message.content
    assert response.id and response.created and response.model
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage is not None
    assert response.usage["total_tokens"] == response.usage.prompt_tokens + response.usage.completion_tokens > 0
    assert "tool_calls" not in response.choices[0].message and response.choices[0].message.get("tool_calls") is None


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "anthropic/claude-3-5-sonnet-20241022", "groq/llama3-8b-8192"])
def test_onellm_streaming_reads_deltas_as_mappings(onellm: chatgate.OpenAI, model: str) -> None:
    stream = onellm.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Count to 5"}], stream=True, max_tokens=20
    )
    printed = ""
    for chunk in stream:
        assert isinstance(chunk, ChatCompletionChunk)
        if chunk.choices[0].delta.get("content"):
            printed += chunk.choices[0].delta["content"]
    assert printed


@pytest.mark.parametrize(
    ("model", "choice"),
    [
        ("openai/gpt-4o-mini", "auto"),
        ("openai/gpt-4o-mini", "required"),
        ("groq/llama3-8b-8192", "auto"),
        ("google/gemini-1.5-flash", "auto"),
    ],
)
def test_onellm_function_calling(onellm: chatgate.OpenAI, model: str, choice: str) -> None:
    response = onellm.chat.completions.create(
        model=model,
        tools=[WEATHER_TOOL],
        tool_choice=choice,
        max_tokens=60,
        messages=[{"role": "user", "content": "What's the weather in NYC?"}],
        temperature=0,
    )
    assert isinstance(response, ChatCompletion)
    called = bool(response.choices[0].message.get("tool_calls"))
    assert called or choice == "auto"
    if response.choices[0].message.get("tool_calls"):
        tool_call = response.choices[0].message["tool_calls"][0]
        assert tool_call["function"]["name"] == "get_weather"
        assert isinstance(json.loads(tool_call["function"]["arguments"]), dict)
        assert tool_call["id"] == tool_call.id and tool_call["type"] == "function"


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "anthropic/claude-3-5-sonnet-20241022", "groq/llama3-8b-8192"])
def test_onellm_multi_turn_appends_the_returned_message(onellm: chatgate.OpenAI, model: str) -> None:
    messages: list[Any] = []
    messages.append({"role": "user", "content": "My name is Alice"})
    response1 = onellm.chat.completions.create(model=model, messages=messages, max_tokens=10, temperature=0)
    assert isinstance(response1, ChatCompletion) and response1.usage is not None
    messages.append(response1.choices[0].message)
    messages.append({"role": "user", "content": "What's my name?"})
    response2 = onellm.chat.completions.create(model=model, messages=messages, max_tokens=10, temperature=0)
    assert isinstance(response2, ChatCompletion) and response2.usage is not None
    assert response2.choices[0].message["content"]
    if model.startswith("openai/"):  # the local model's prompt holds the first answer, token for token
        assert response2.usage.prompt_tokens_details.cached_tokens >= response1.usage.prompt_tokens


def test_onellm_multi_turn_appends_a_returned_tool_call(onellm: chatgate.OpenAI, fakes: list[FakeOpenAI]) -> None:
    messages: list[Any] = [{"role": "user", "content": "What's the weather in NYC?"}]
    first = onellm.chat.completions.create(model="groq/llama3-8b-8192", messages=messages, tools=[WEATHER_TOOL])
    assert isinstance(first, ChatCompletion)
    call = first.choices[0].message["tool_calls"][0]
    messages += [first.choices[0].message, {"role": "tool", "tool_call_id": call["id"], "content": '{"temp": 22}'}]
    second = onellm.chat.completions.create(
        model="openai/gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL], max_tokens=10
    )
    assert isinstance(second, ChatCompletion) and second.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_onellm_multiple_completions(onellm: chatgate.OpenAI) -> None:
    response = onellm.chat.completions.create(
        model="openai/gpt-4o-mini",
        n=3,
        temperature=0.9,
        max_tokens=12,
        messages=[{"role": "user", "content": "Give me a creative name"}],
    )
    assert isinstance(response, ChatCompletion)
    options = [choice.message["content"] for choice in response.choices]
    assert len(options) == 3 and all(isinstance(o, str) and o for o in options)


@pytest.mark.parametrize(
    ("model", "system"),
    [("openai/gpt-4o-mini", "Output valid JSON only"), ("google/gemini-1.5-pro", "Extract structured data as JSON.")],
)
def test_onellm_json_mode(onellm: chatgate.OpenAI, model: str, system: str) -> None:
    response = onellm.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "List 3 colors with hex codes"}],
        response_format={"type": "json_object"},
        max_tokens=200,
        temperature=0,
    )
    assert isinstance(response, ChatCompletion)
    if response.choices[0].finish_reason == "stop":
        json.loads(response.choices[0].message["content"])


@pytest.mark.parametrize(
    ("model", "system", "ask", "temperature", "limit"),
    [
        ("openai/gpt-4o-mini", "You are a creative writer.", "Write a haiku about programming", 0.9, 50),
        (
            "anthropic/claude-3-5-sonnet-20241022",
            "You are an expert programmer.",
            "Write a Python function to sort a list",
            0.2,
            200,
        ),
        ("openai/gpt-4o-mini", "You are a helpful coding assistant.", "How do I read a file in Python?", None, 30),
        ("openai/gpt-4o-mini", None, "Write a poem", 1.0, 30),
        ("openai/gpt-4o-mini", None, "What is 2+2?", 0.2, 10),
        ("openai/gpt-4o-mini", None, "Explain quantum computing", None, 100),
    ],
)
def test_onellm_system_temperature_and_token_limit_examples(
    onellm: chatgate.OpenAI, model: str, system: str | None, ask: str, temperature: float | None, limit: int
) -> None:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": ask}]
    response = onellm.chat.completions.create(model=model, messages=messages, temperature=temperature, max_tokens=limit)
    assert isinstance(response, ChatCompletion) and response.usage is not None
    assert response.choices[0].message["content"] and response.usage["completion_tokens"] <= limit


def test_onellm_prebuilt_multi_turn_and_message_formats(onellm: chatgate.OpenAI) -> None:
    conversations: list[list[Any]] = [
        [
            {"role": "user", "content": "My name is Alice"},
            {"role": "assistant", "content": "Nice to meet you, Alice!"},
            {"role": "user", "content": "What's my name?"},
        ],
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Hi there! How can I help you?"},
            {"role": "user", "content": "What's the weather like?"},
        ],
        [
            {"role": "user", "content": "What's the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_123",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_123", "content": '{"temperature": 22, "condition": "sunny"}'},
        ],
    ]
    for messages in conversations:
        response = onellm.chat.completions.create(model="openai/gpt-4o-mini", messages=messages, max_tokens=8)
        assert isinstance(response, ChatCompletion) and response.choices[0].message["content"]


def test_onellm_image_message_reaches_a_vision_provider(onellm: chatgate.OpenAI) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What's in this image?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/image.jpg", "detail": "high"}},
            ],
        }
    ]
    response = onellm.chat.completions.create(model="groq/llama-3.2-90b-vision", messages=messages)
    assert isinstance(response, ChatCompletion) and response.choices[0].message["content"]
    with pytest.raises(InvalidRequestError):  # the local model reads text only, and says so
        onellm.chat.completions.create(model="openai/gpt-4o-mini", messages=messages)


def test_onellm_fallbacks_and_retries(onellm: chatgate.OpenAI, fakes: list[FakeOpenAI]) -> None:
    fakes[0].then(Behaviour(status=503), Behaviour(status=503))
    response = onellm.chat.completions.create(
        model="mistral/mistral-large",
        retries=0,
        messages=[{"role": "user", "content": "Explain quantum computing"}],
        fallback_models=["groq/llama3-8b-8192", "anthropic/claude-3-opus"],
    )
    assert isinstance(response, ChatCompletion)
    assert response.model == "anthropic/claude-3-opus"  # mistral and groq failed (one fake behind both)
    assert response.choices[0].message["content"]


def test_onellm_async_client() -> None:
    async def main() -> str:
        async with chatgate.AsyncOpenAI() as client:
            response = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
            )
            content: str = response.choices[0].message["content"]
            return content

    assert asyncio.run(main())


def test_onellm_multi_provider_loop(onellm: chatgate.OpenAI) -> None:
    """docs/guides/migration.md, "Advanced Migration: Multi-Provider" (max_tokens added for speed)."""
    models = [
        "openai/gpt-4",
        "anthropic/claude-3-opus",
        "google/gemini-pro",
        "groq/llama3-70b",
        "mistral/mistral-large",
    ]
    answers = {}
    for model in models:
        response = onellm.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=20
        )
        assert isinstance(response, ChatCompletion)
        answers[model] = response.choices[0].message.content
    assert all(answers.values()) and answers["openai/gpt-4"] not in (answers["groq/llama3-70b"], "Hello from a.")
