"""The Gateway as a Backend, with real parts: a Router over a fake OpenAI upstream on loopback, the
in-process limiter and cache, budgets, stored completions and the ledger on a real database. Each test
reads what the Gateway wrote on the request's Exchange, and what the stores hold afterwards."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from sqlalchemy import text

from chatgate.config import Settings, load_settings
from chatgate.errors import InsufficientQuotaError, RateLimitError
from chatgate.exchange import Exchange, Grant
from chatgate.gateway.budget import BudgetStore
from chatgate.gateway.cache import MemoryCache
from chatgate.gateway.gateway import Gateway, GatewayPolicy
from chatgate.gateway.ledger import Ledger
from chatgate.gateway.limiter import MemoryLimiter
from chatgate.gateway.stored import StoredCompletions
from chatgate.pricing import Price
from chatgate.protocol import ChatCompletionRequest
from chatgate.protocol.validation import parse_chat_request
from chatgate.routing.factory import UpstreamClients, build_router
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import FakeServer
from tests.gateway.conftest import migrated
from tests.serving import running

T = TypeVar("T")


def synchronously(test: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """An async test run on its own event loop (pytest sees the same fixtures)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> T:
        return asyncio.run(test(*args, **kwargs))

    return run


PRICE = Price.per_million(1.0, 2.0)  # micro-USD per token: 1 in, 2 out
USAGE_COST = PRICE.cost(11, 7)  # what the fake upstream reports for every answer


@dataclass
class Upstream:
    fake: FakeOpenAI
    url: str


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    fake = FakeOpenAI(reply="one two three four five six")
    with running(FakeServer(fake.app())) as server:
        yield Upstream(fake, server.url)


def settings_for(upstream: Upstream) -> Settings:
    data = load_settings(env={}).model_dump()
    data |= {
        "models": [],
        "aliases": {},
        "providers": {"fake": {"base_url": f"{upstream.url}/v1", "api_key": "sk-upstream"}},
        "upstream_models": [{"name": "priced", "deployments": [{"provider": "fake", "model": "up",
                             "input_price_per_million": 1.0, "output_price_per_million": 2.0}]}],
    }  # fmt: skip
    return Settings.model_validate(data)


@asynccontextmanager
async def gateway_on(db: tuple[str, str | None], upstream: Upstream, **policy: object) -> AsyncIterator[Gateway]:
    engine = await migrated(db)
    clients = UpstreamClients.create()
    ledger = Ledger(engine, flush_seconds=60)
    ledger.start()
    budgets = BudgetStore(engine)
    budgets.start()
    gateway = Gateway(build_router(settings_for(upstream), [], clients, env={}), limiter=MemoryLimiter(),
                      cache=MemoryCache(ttl_seconds=60, max_entries=100), stored=StoredCompletions(engine),
                      budgets=budgets, ledger=ledger, policy=GatewayPolicy(**policy))  # type: ignore[arg-type]  # fmt: skip
    try:
        yield gateway
    finally:
        await gateway.aclose()
        await clients.aclose()
        await engine.dispose()


def request(**fields: object) -> tuple[ChatCompletionRequest, Exchange]:
    body = json.dumps({"model": "priced", "messages": [{"role": "user", "content": "Hi"}], **fields}).encode()
    req = parse_chat_request(body)
    ex = Exchange("req_test_" + str(time.monotonic_ns()), endpoint="chat.completions", model_asked=req.model,
                  stream=bool(req.stream), body_bytes=len(body))  # fmt: skip
    return req, ex


def budgeted(**limits: object) -> Grant:
    return Grant("key_budgeted", budget=10**6, period="monthly", **limits)  # type: ignore[arg-type]


@synchronously
async def test_a_budgeted_answer_holds_its_worst_case_then_is_charged_its_usage(
    db_url: tuple[str, str | None], upstream: Upstream
) -> None:
    async with gateway_on(db_url, upstream, cache_default=False) as gateway:
        req, ex = request(max_tokens=50)
        ex.grant = budgeted()
        completion = await gateway.complete(req, ex)
        assert completion.model == "priced"
        assert ex.deployment == "fake/up" and ex.price == PRICE and ex.attempts == 1
        assert ex.reserved >= PRICE.cost(0, 50)  # the completion's worst case, at least
        assert ex.cost == USAGE_COST
        assert gateway.budgets is not None
        budgets = gateway.budgets
    spend = await budgets.spend("key_budgeted", "monthly", time.time())  # after aclose: everything written
    assert (spend.spent, spend.reserved) == (USAGE_COST, 0)


@synchronously
async def test_a_budget_too_small_refuses_before_the_upstream_is_asked(
    db_url: tuple[str, str | None], upstream: Upstream
) -> None:
    async with gateway_on(db_url, upstream, cache_default=False) as gateway:
        asked = len(upstream.fake.requests)
        req, ex = request(max_tokens=1000)
        ex.grant = Grant("key_poor", budget=10, period=None)
        with pytest.raises(InsufficientQuotaError):
            await gateway.complete(req, ex)
        assert len(upstream.fake.requests) == asked and ex.reserved == 0 and ex.cost == 0


@synchronously
async def test_a_stream_closed_early_is_charged_what_it_delivered_and_settles_at_once(
    db_url: tuple[str, str | None], upstream: Upstream
) -> None:
    async with gateway_on(db_url, upstream, cache_default=False) as gateway:
        req, ex = request(max_tokens=50, stream=True)
        ex.grant = budgeted()
        chunks = gateway.stream(req, ex)
        first = await anext(chunks)
        assert first.choices and ex.first_token_at is not None
        await chunks.aclose()  # type: ignore[attr-defined]  # the client went away
        assert ex.usage is None and ex.streamed_choices == 1
        assert ex.cost == PRICE.cost(ex.body_bytes // 4, 1) > 0  # settled by the stream's own finally
        budgets = gateway.budgets
    assert budgets is not None
    spend = await budgets.spend("key_budgeted", "monthly", time.time())
    assert (spend.spent, spend.reserved) == (ex.cost, 0)


@synchronously
async def test_a_stream_without_include_usage_hides_the_usage_chunk_but_is_charged_it(
    db_url: tuple[str, str | None], upstream: Upstream
) -> None:
    async with gateway_on(db_url, upstream, cache_default=False) as gateway:
        req, ex = request(stream=True)
        chunks = [chunk async for chunk in gateway.stream(req, ex)]
        assert all(chunk.choices for chunk in chunks)
        assert "include_usage" in json.dumps(upstream.fake.requests[-1]["stream_options"])  # asked upstream anyway
        assert ex.usage is not None and ex.cost == USAGE_COST


@synchronously
async def test_rate_limits_refuse_with_the_keys_headers(db_url: tuple[str, str | None], upstream: Upstream) -> None:
    async with gateway_on(db_url, upstream, cache_default=False) as gateway:
        grant = Grant("key_limited", rpm=1)
        req, ex = request()
        ex.grant = grant
        await gateway.complete(req, ex)
        assert ex.ratelimit_headers["x-ratelimit-limit-requests"] == "1"
        req, second = request()
        second.grant = grant
        with pytest.raises(RateLimitError) as refused:
            await gateway.complete(req, second)
        assert refused.value.headers()["x-ratelimit-remaining-requests"] == "0"
        assert second.deployment is None and second.cost == 0


@synchronously
async def test_a_cached_answer_is_free_marked_and_never_reaches_the_upstream(
    db_url: tuple[str, str | None], upstream: Upstream
) -> None:
    async with gateway_on(db_url, upstream, cache_default=True) as gateway:
        req, first = request(temperature=0, max_tokens=20)
        first.grant = budgeted()
        await gateway.complete(req, first)
        asked = len(upstream.fake.requests)
        req, again = request(temperature=0, max_tokens=20)
        again.grant = budgeted()
        hit = await gateway.complete(req, again)
        assert (first.cache, again.cache) == ("miss", "hit")
        assert len(upstream.fake.requests) == asked and again.cost == 0 and again.reserved == 0
        assert hit.usage is not None and hit.id != ""
        req, streamed = request(temperature=0, max_tokens=20, stream=True)
        streamed.grant = budgeted()
        text_ = "".join([c.choices[0].delta.content or "" async for c in gateway.stream(req, streamed) if c.choices])
        assert streamed.cache == "hit" and text_ == "one two three four five six"


@synchronously
async def test_finish_writes_the_exchange_as_one_ledger_row_and_counts_it(
    db_url: tuple[str, str | None], upstream: Upstream
) -> None:
    async with gateway_on(db_url, upstream, cache_default=False) as gateway:
        req, ex = request(max_tokens=30)
        ex.grant = budgeted()
        await gateway.complete(req, ex)
        ex.status, ex.finished_at = 200, time.monotonic()
        gateway.finish(ex)
        assert gateway.ledger is not None
        assert await gateway.ledger.flush() == 1
        async with gateway.ledger.engine.connect() as conn:
            row = (await conn.execute(text("SELECT * FROM usage_ledger WHERE request_id = :r"),
                                      {"r": ex.request_id})).one()  # fmt: skip
        assert (row.key_id, row.model, row.deployment, row.status, row.cost) == (
            "key_budgeted", "priced", "fake/up", 200, USAGE_COST)  # fmt: skip
        assert (row.prompt_tokens, row.completion_tokens) == (11, 7)
        assert gateway.stats.requests["chat.completions", 200] == 1
        assert gateway.stats.cost["chat.completions", "priced"] == USAGE_COST


@synchronously
async def test_store_true_keeps_the_answer_for_the_callers_key(
    db_url: tuple[str, str | None], upstream: Upstream
) -> None:
    async with gateway_on(db_url, upstream, cache_default=False) as gateway:
        for stream in (False, True):
            req, ex = request(store=True, stream=stream, metadata={"case": f"stream={stream}"})
            ex.grant = Grant("key_storing")
            if stream:
                [chunk async for chunk in gateway.stream(req, ex)]
            else:
                await gateway.complete(req, ex)
        page = await gateway.stored.list("key_storing", after=None, limit=10, order="asc", model=None, metadata={})
        assert [c["metadata"]["case"] for c in page.body()["data"]] == ["stream=False", "stream=True"]
        assert (await gateway.stored.list("", after=None, limit=10, order="asc", model=None,
                                          metadata={})).body()["data"] == []  # fmt: skip
