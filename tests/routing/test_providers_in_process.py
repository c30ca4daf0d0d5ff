"""The same providers through the in-process client: no server, the router in the test's process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import chatgate
from chatgate.errors import UpstreamError
from chatgate.protocol import ChatCompletion
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini, GeminiBehaviour
from tests.fakes.openai_upstream import Behaviour
from tests.fakes.server import FakeServer
from tests.routing.test_providers_e2e import CLAUDE, GEMINI, GEMINI_KEY, e2e_settings
from tests.serving import all_running

ASK: list[Any] = [{"role": "user", "content": "Hi"}]
WEATHER: list[Any] = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeAnthropic, FakeGemini, chatgate.OpenAI]]:
    anthropic, gemini = FakeAnthropic(), FakeGemini(api_key=GEMINI_KEY)
    with (
        all_running([FakeServer(anthropic.app()), FakeServer(gemini.app())]) as servers,
        chatgate.OpenAI(settings=e2e_settings(servers[0].url, servers[1].url)) as client,
    ):
        yield anthropic, gemini, client


@pytest.mark.parametrize("model", [CLAUDE, GEMINI])
def test_plain_streamed_and_tools(fakes: tuple[FakeAnthropic, FakeGemini, chatgate.OpenAI], model: str) -> None:
    client = fakes[2]
    plain = client.chat.completions.create(model=model, messages=ASK)
    assert isinstance(plain, ChatCompletion) and plain.choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=model, messages=ASK, stream=True) if c.choices)  # fmt: skip
    assert streamed == plain.choices[0].message.content
    tools = client.chat.completions.create(model=model, messages=ASK, tools=WEATHER, tool_choice="required")
    assert isinstance(tools, ChatCompletion) and tools.choices[0].message.tool_calls


def test_fallback_across_providers_and_errors(fakes: tuple[FakeAnthropic, FakeGemini, chatgate.OpenAI]) -> None:
    anthropic, gemini, client = fakes
    anthropic.then(*[Behaviour(status=529)] * 2)
    r = client.chat.completions.create(model="claude-or-gemini", messages=ASK)
    assert isinstance(r, ChatCompletion) and r.model == GEMINI
    gemini.then(GeminiBehaviour(status=401))
    with pytest.raises(UpstreamError) as err:
        client.chat.completions.create(model=GEMINI, messages=ASK)
    assert err.value.status == 502 and err.value.type == "upstream_auth_error"


def test_async_in_process_client(fakes: tuple[FakeAnthropic, FakeGemini, chatgate.OpenAI]) -> None:
    async def run() -> str | None:
        async with chatgate.AsyncOpenAI(settings=fakes[2]._async._settings) as client:
            r: ChatCompletion = await client.chat.completions.create(model=CLAUDE, messages=ASK)
        return r.choices[0].message.content

    assert asyncio.run(run())
