"""The response cache: which requests it keys and how, LRU and TTL in memory, Redis; then through a
real server: opt-in by config, key or header, hits are free and say so, and streams stream from it."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatgate.config import CacheConfig
from chatgate.gateway.cache import MemoryCache, RedisCache, cache_key, deterministic, open_cache
from chatgate.protocol import ChatCompletionRequest
from tests.conftest import make_settings
from tests.gateway.conftest import RedisProcess, free_port
from tests.gateway.helpers import MASTER, admin_client, new_key, sdk
from tests.gateway.test_limits import REDIS, needs_redis
from tests.serving import ServerThread, serve

ASK: list[Any] = [{"role": "user", "content": "Name a colour."}]


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": ASK, **fields})


def test_only_deterministic_requests_are_cached_and_keys_ignore_delivery() -> None:
    assert deterministic(request(temperature=0)) and deterministic(request(seed=7))
    assert not deterministic(request()) and not deterministic(request(temperature=0.5))
    base = cache_key(request(temperature=0), "key_a")
    assert cache_key(request(temperature=0, stream=True, user="u", metadata={"a": "b"}), "key_a") == base
    assert cache_key(request(temperature=0, max_tokens=5), "key_a") != base
    assert cache_key(request(temperature=0), "key_b") != base  # never served to another key


def test_memory_cache_evicts_the_least_recently_used_and_expires() -> None:
    async def run() -> list[str | None]:
        cache = MemoryCache(ttl_seconds=3600, max_entries=2)
        await cache.put("a", "1")
        await cache.put("b", "2")
        await cache.get("a")
        await cache.put("c", "3")  # b was least recently used
        short = MemoryCache(ttl_seconds=1, max_entries=2)
        await short.put("x", "9")
        short._entries["x"] = (time.monotonic() - 1, "9")  # as if its second had passed
        return [await cache.get("a"), await cache.get("b"), await cache.get("c"), await short.get("x")]

    assert asyncio.run(run()) == ["1", None, "3", None]


@needs_redis
def test_redis_cache_keeps_entries_with_a_ttl() -> None:
    async def run() -> tuple[str | None, str | None, int]:
        cache = open_cache(REDIS, use_redis=True, ttl_seconds=60, max_entries=1)
        assert isinstance(cache, RedisCache)
        key = secrets.token_hex(8)
        await cache.put(key, '{"x": 1}')
        ttl = await cache._redis.ttl(f"chatgate:cache:{key}")
        got, missing = await cache.get(key), await cache.get(key + "-no")
        await cache.aclose()
        return got, missing, int(ttl)

    got, missing, ttl = asyncio.run(run())
    assert got == '{"x": 1}' and missing is None and 0 < ttl <= 60


# --- a real server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    data: Path = tmp_path_factory.mktemp("cache")
    settings = make_settings(master_key=MASTER, data_dir=str(data), cache=CacheConfig(enabled=False))
    models = [m.model_copy(update={"input_price_per_million": 1.0, "output_price_per_million": 1.0})
              for m in settings.models]  # fmt: skip
    with serve(settings.model_copy(update={"models": models})) as server:
        yield server


def usage_of(server: ServerThread, key_id: str) -> dict[str, Any]:
    with admin_client(server) as admin:
        totals: dict[str, Any] = admin.get("/admin/usage", params={"key_id": key_id}).json()["totals"]
    return totals


def test_a_hit_says_so_costs_nothing_and_matches_the_answer(cached: ServerThread) -> None:
    key_id, key = new_key(cached, "c", cache=True)
    client = sdk(cached, key)
    ask: dict[str, Any] = {"model": "gpt-4", "messages": ASK, "temperature": 0, "max_tokens": 6}
    first = client.chat.completions.with_raw_response.create(**ask)
    second = client.chat.completions.with_raw_response.create(**ask)
    assert first.headers["x-chatgate-cache"] == "miss" and second.headers["x-chatgate-cache"] == "hit"
    a, b = first.parse(), second.parse()
    assert a.choices[0].message.content == b.choices[0].message.content and a.id != b.id
    assert a.usage == b.usage
    totals = usage_of(cached, key_id)
    assert totals["requests"] == 2 and totals["cache_hits"] == 1
    assert totals["cost_micro_usd"] == a.usage.total_tokens  # only the first was paid for
    sampled = client.chat.completions.with_raw_response.create(**{**ask, "temperature": 1})
    assert "x-chatgate-cache" not in sampled.headers  # not deterministic: never cached


def test_a_streamed_request_streams_from_the_cache(cached: ServerThread) -> None:
    _, key = new_key(cached, "c", cache=True)
    client = sdk(cached, key)
    ask: dict[str, Any] = {"model": "gpt-4", "messages": ASK, "seed": 3, "max_tokens": 6}
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**ask, stream=True)
                       if c.choices)  # fmt: skip
    with client.chat.completions.with_streaming_response.create(
        **ask, stream=True, stream_options={"include_usage": True}
    ) as response:
        assert response.headers["x-chatgate-cache"] == "hit"
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == streamed
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    plain = client.chat.completions.with_raw_response.create(**ask)
    assert plain.headers["x-chatgate-cache"] == "hit" and plain.parse().choices[0].message.content == streamed


def test_the_request_header_overrides_the_key_and_the_server(cached: ServerThread) -> None:
    _, key = new_key(cached, "c")  # the key says nothing; the server's default is off
    client = sdk(cached, key)
    ask: dict[str, Any] = {"model": "gpt-4", "messages": [{"role": "user", "content": "Count to 3."}],
           "temperature": 0,
           "max_tokens": 4}  # fmt: skip
    off = client.chat.completions.with_raw_response.create(**ask)
    assert "x-chatgate-cache" not in off.headers
    on = [client.chat.completions.with_raw_response.create(**ask, extra_headers={"x-chatgate-cache": "on"})
          for _ in range(2)]  # fmt: skip
    assert [r.headers["x-chatgate-cache"] for r in on] == ["miss", "hit"]
    _, other = new_key(cached, "c", cache=True)  # another key never gets this key's entry
    theirs = sdk(cached, other)
    assert theirs.chat.completions.with_raw_response.create(**ask).headers["x-chatgate-cache"] == "miss"


def test_an_unreachable_cache_is_a_miss_not_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    settings = make_settings(data_dir=str(tmp_path), redis_url="redis://127.0.0.1:1/0", cache=CacheConfig(enabled=True))
    with serve(settings) as server:
        client = sdk(server, "x")
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(model="gpt-4", messages=ASK, temperature=0,
                                                                   max_tokens=2)  # fmt: skip
            assert raw.headers["x-chatgate-cache"] == "miss" and raw.parse().choices
    warned = [r for r in caplog.records if r.name == "chatgate.gateway" and "Redis unreachable" in r.getMessage()]
    assert len(warned) == 1 and "response cache" in warned[0].getMessage()  # once per outage
    assert not any(r.exc_info for r in caplog.records)  # no traceback in the log


def test_a_cache_whose_redis_goes_away_answers_without_it_then_uses_it_again() -> None:
    redis = RedisProcess(free_port()).start()

    async def run() -> list[str | None]:
        cache = open_cache(redis.url, use_redis=True, ttl_seconds=60, max_entries=1)
        assert isinstance(cache, RedisCache)
        cache._outage.retry_seconds = 0  # try Redis again at every call
        seen = []
        try:
            await cache.put("k", "kept")
            seen.append(await cache.get("k"))
            await asyncio.to_thread(redis.stop)
            await cache.put("k2", "lost")  # nothing kept, nothing raised
            seen.append(await cache.get("k"))
            await asyncio.to_thread(redis.start)  # a fresh, empty Redis on the same port
            await cache.put("k", "again")
            seen.append(await cache.get("k"))
        finally:
            await cache.aclose()
            redis.stop()
        return seen

    assert asyncio.run(run()) == ["kept", None, "again"]
