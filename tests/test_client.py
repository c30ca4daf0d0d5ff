"""The in-process client: the SDK's interface with the router in the caller's process."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

import chatgate
from chatgate.errors import InvalidRequestError, ModelNotFoundError
from chatgate.protocol import ChatCompletion, ChatCompletionChunk
from tests.fakes.openai_upstream import Behaviour, FakeOpenAI
from tests.fakes.server import FakeServer
from tests.routing.conftest import routing_settings

ASK: list[Any] = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def fakes() -> Iterator[list[FakeOpenAI]]:
    items = [FakeOpenAI(reply=f"Hello from {n}.") for n in ("a", "b", "c")]
    servers = [FakeServer(f.app()).start() for f in items]
    for fake, server in zip(items, servers, strict=True):
        fake.port = server.port
    os.environ["FAKEAI_KEY"] = "sk-fakeai-secret"
    yield items
    for s in servers:
        s.stop()


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
