"""OpenAICompatBackend against a fake OpenAI-compatible server on loopback: what it forwards, and its
failures (routing tests drive the rest through the server). The deployment's key, echoed by the
upstream in an error answer, a streamed error answer or an error event mid-stream, never reaches
the caller."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from chatgate.backends.openai_compat import OpenAICompatBackend
from chatgate.backends.upstream import AioPool, UpstreamConfig
from chatgate.errors import UpstreamError
from chatgate.exchange import Exchange
from chatgate.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from tests.fakes.openai_upstream import Behaviour, FakeOpenAI
from tests.fakes.server import FakeServer
from tests.serving import running

KEY = "sk-upstream-secret-123"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeOpenAI, FakeServer]]:
    fake = FakeOpenAI()
    with running(FakeServer(fake.app())) as server:
        yield fake, server


@pytest.fixture
def fake(served: tuple[FakeOpenAI, FakeServer]) -> FakeOpenAI:
    served[0].queue.clear()
    served[0].requests.clear()
    return served[0]


@pytest.fixture
def url(served: tuple[FakeOpenAI, FakeServer]) -> str:
    return f"{served[1].url}/v1"


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "Hi"}],
                                                 **fields})  # fmt: skip


def run(url: str, req: ChatCompletionRequest, **options: Any) -> tuple[list[ChatCompletionChunk], Any]:
    """The chunks (streamed) or the completion (plain), and the UpstreamError that ended it, if any."""
    chunks: list[ChatCompletionChunk] = []

    async def go() -> tuple[ChatCompletion | None, UpstreamError | None]:
        pool = AioPool()
        backend = OpenAICompatBackend(UpstreamConfig("someai", "up-model", url, api_key=KEY, timeout=30), pool,
                                      **options)  # fmt: skip
        try:
            if not req.stream:
                return await backend.complete(req, Exchange("t")), None
            async for chunk in backend.stream(req, Exchange("t")):
                chunks.append(chunk)
        except UpstreamError as exc:
            return None, exc
        finally:
            await pool.aclose()
        return None, None

    result, error = asyncio.run(go())
    return chunks, result if error is None else error


def test_extensions_only_for_servers_that_take_them_and_rejected_fields_dropped(fake: FakeOpenAI, url: str) -> None:
    req = request(top_k=5, min_p=0.1, n=2, store=True)
    run(url, req)
    run(url, req, extensions=True, rejected=frozenset({"n"}))
    plain, local = fake.requests
    assert "top_k" not in plain and "min_p" not in plain and plain["n"] == 2 and plain["store"] is True
    assert (local["top_k"], local["min_p"]) == (5, 0.1) and "n" not in local
    assert plain["model"] == "up-model" and "fallback_models" not in plain


@pytest.mark.parametrize("streamed", [False, True])
def test_an_echoed_key_never_reaches_the_caller(fake: FakeOpenAI, url: str, streamed: bool) -> None:
    fake.then(Behaviour(status=400, echo_key=True))
    chunks, error = run(url, request(stream=streamed))
    assert fake.requests  # it was asked, and answered with the key in its message
    assert isinstance(error, UpstreamError) and chunks == []
    assert (error.status, error.retryable) == (400, False)
    assert KEY not in str(error.body()) and "(key: [redacted])" in error.message


def test_an_error_event_mid_stream_is_redacted_and_final(fake: FakeOpenAI, url: str) -> None:
    fake.then(Behaviour(error_after=2, echo_key=True, error_code="server_failure"))
    chunks, error = run(url, request(stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["", "Hello"]
    assert isinstance(error, UpstreamError)
    assert (error.status, error.type, error.code, error.retryable) == (502, "server_error", "server_failure", False)
    assert KEY not in str(error.body()) and "(key: [redacted])" in error.message


def test_an_error_event_before_any_chunk_may_be_retried(fake: FakeOpenAI, url: str) -> None:
    fake.then(Behaviour(error_after=0, echo_key=True))
    chunks, error = run(url, request(stream=True))
    assert chunks == [] and isinstance(error, UpstreamError)
    assert (error.status, error.retryable) == (502, True) and KEY not in error.message


def test_a_stream_cut_and_a_malformed_answer(fake: FakeOpenAI, url: str) -> None:
    fake.then(Behaviour(cut_after=2), Behaviour(malformed=True))
    chunks, error = run(url, request(stream=True))
    assert len(chunks) == 2 and (error.status, error.code, error.retryable) == (502, "upstream_stream_cut", False)
    _, error = run(url, request())
    assert (error.status, error.code, error.retryable) == (502, "upstream_malformed_response", True)
