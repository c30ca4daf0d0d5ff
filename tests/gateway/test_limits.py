"""Rate limits per key: in process, in the real Redis, and shared by two replicas through it."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from chatgate.gateway.limiter import Limiter, MemoryLimiter, RedisLimiter, open_limiter
from tests.conftest import StartServer, make_settings
from tests.gateway.conftest import RedisProcess, free_port
from tests.gateway.helpers import MASTER, admin_client, create_key, sdk, sdk_with_new_key
from tests.serving import ServerThread, all_running, serve

REDIS = "redis://127.0.0.1:6379/0"
ASK: list[Any] = [{"role": "user", "content": "Hi"}]


def redis_available() -> bool:
    async def ping() -> bool:
        limiter = open_limiter(REDIS)
        try:
            assert isinstance(limiter, RedisLimiter)
            return bool(await limiter._redis.ping())
        finally:
            await limiter.aclose()

    try:
        return asyncio.run(ping())
    except Exception:  # not reachable: the tests that need it skip, saying so
        return False


needs_redis = pytest.mark.skipif(not redis_available(), reason="Redis is not reachable at 127.0.0.1:6379")


def clear_of_minute_boundary() -> None:
    """Counters reset each minute: start a test well inside one (a wait, never a speed bound)."""
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)


async def exercise(limiter: Limiter) -> list[str | None]:
    key = "key_" + secrets.token_hex(6)
    out: list[str | None] = [(await limiter.check(key, 3, None, 10)).refused for _ in range(4)]
    tokens_key = "key_" + secrets.token_hex(6)
    out.append((await limiter.check(tokens_key, None, 100, 60)).refused)
    out.append((await limiter.check(tokens_key, None, 100, 60)).refused)
    await limiter.aclose()
    return out


def test_the_in_process_limiter_counts_requests_and_tokens() -> None:
    clear_of_minute_boundary()
    assert asyncio.run(exercise(MemoryLimiter())) == [None, None, None, "requests", None, "tokens"]


@needs_redis
def test_the_redis_limiter_counts_requests_and_tokens() -> None:
    clear_of_minute_boundary()

    async def run() -> list[str | None]:
        return await exercise(open_limiter(REDIS))

    assert asyncio.run(run()) == [None, None, None, "requests", None, "tokens"]


def test_headers_say_limit_remaining_and_reset() -> None:
    async def run() -> dict[str, str]:
        limiter = MemoryLimiter()
        await limiter.check("k", 5, 1000, 100)
        return (await limiter.check("k", 5, 1000, 100)).headers()

    headers = asyncio.run(run())
    assert headers["x-ratelimit-limit-requests"] == "5" and headers["x-ratelimit-remaining-requests"] == "3"
    assert headers["x-ratelimit-limit-tokens"] == "1000" and headers["x-ratelimit-remaining-tokens"] == "800"
    assert headers["x-ratelimit-reset-requests"].endswith("s")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerThread]]:
    if not redis_available():
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    data: Path = tmp_path_factory.mktemp("shared")  # one database and one Redis for both replicas
    settings = make_settings(master_key=MASTER, data_dir=str(data), redis_url=REDIS)
    with all_running(ServerThread(settings) for _ in range(2)) as servers:
        yield servers


def test_two_replicas_sharing_redis_enforce_one_rpm_limit(replicas: list[ServerThread]) -> None:
    clear_of_minute_boundary()
    with admin_client(replicas[0]) as admin:
        key = create_key(admin, "limited", rpm=5)["key"]
    clients = [sdk(s, key) for s in replicas]
    outcomes = []
    for i in range(8):
        try:
            raw = clients[i % 2].chat.completions.with_raw_response.create(model="gpt-4", messages=ASK, max_tokens=1)
            outcomes.append("ok")
            assert raw.headers["x-ratelimit-limit-requests"] == "5"
        except openai.RateLimitError as err:
            outcomes.append("429")
            assert err.response.headers["retry-after"]
            assert err.code == "rate_limit_exceeded"
    assert outcomes == ["ok"] * 5 + ["429"] * 3  # not 5 per replica


def test_the_sdk_sees_ratelimiterror_with_openai_headers(replicas: list[ServerThread]) -> None:
    clear_of_minute_boundary()
    with admin_client(replicas[0]) as admin:
        key = create_key(admin, "tokens", tpm=30)["key"]
    client = sdk(replicas[1], key)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="gpt-4", messages=ASK, max_tokens=100)
    body = err.value.body
    assert isinstance(body, dict) and body["type"] == "tokens"
    assert err.value.response.headers["x-ratelimit-limit-tokens"] == "30"


# --- Redis away: counted in process, with one warning and a metric; never a 500 ---------------------


def fallbacks(server: ServerThread) -> int:
    metrics = httpx.get(f"{server.base_url}/metrics").text
    found = re.search(r"^chatgate_rate_limit_fallbacks_total (\d+)$", metrics, re.MULTILINE)
    assert found is not None, metrics
    return int(found.group(1))


def outcome(client: openai.OpenAI) -> str:
    """ "ok" or "429" (with OpenAI's headers); anything else (a 500) fails the test."""
    try:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4", messages=ASK, max_tokens=1)
    except openai.RateLimitError as err:
        assert err.code == "rate_limit_exceeded" and int(err.response.headers["retry-after"]) >= 1
        return "429"
    assert raw.headers["x-ratelimit-limit-requests"]
    return "ok"


def test_redis_on_a_closed_port_counts_in_process_with_a_warning_and_a_metric(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clear_of_minute_boundary()
    caplog.set_level(logging.WARNING, logger="chatgate.gateway")
    settings = make_settings(master_key=MASTER, data_dir=str(tmp_path), redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with serve(settings) as server:
        client = sdk_with_new_key(server, "limited", rpm=3)
        assert [outcome(client) for _ in range(5)] == ["ok", "ok", "ok", "429", "429"]  # the limit still holds
        assert fallbacks(server) == 5
        assert httpx.get(f"{server.base_url}/health").json()["status"] == "ok"
    warnings = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 1 and "127.0.0.1" not in warnings[0].getMessage()  # once per outage


def test_redis_going_away_mid_run_never_fails_a_request(tmp_path: Path, start_server: StartServer) -> None:
    clear_of_minute_boundary()
    with RedisProcess(free_port()) as redis:
        server = start_server(master_key=MASTER, data_dir=str(tmp_path), redis_url=redis.url)
        client = sdk_with_new_key(server, "limited", rpm=3)
        assert [outcome(client) for _ in range(2)] == ["ok", "ok"]
        assert fallbacks(server) == 0  # counted in Redis while it was there
        redis.stop()
        assert [outcome(client) for _ in range(4)] == ["ok", "ok", "ok", "429"]  # this replica counts on its own
        assert fallbacks(server) == 4
        assert httpx.get(f"{server.base_url}/health").json()["status"] == "ok"


def test_the_limiter_goes_back_to_redis_when_it_returns() -> None:
    clear_of_minute_boundary()
    redis = RedisProcess(free_port())
    key = "key_" + secrets.token_hex(6)

    async def three(limiter: RedisLimiter, phase: str) -> list[str | None]:
        return [(await limiter.check(key + phase, 2, None, 1)).refused for _ in range(3)]

    async def run() -> list[tuple[list[str | None], int]]:
        opened = open_limiter(redis.url, timeout=1.0)
        assert isinstance(opened, RedisLimiter)
        limiter = RedisLimiter(opened._redis, retry_seconds=0)  # try Redis again at every check
        out = []
        try:
            for phase, action in (("a", redis.start), ("b", redis.stop), ("c", redis.start)):
                await asyncio.to_thread(action)
                out.append((await three(limiter, phase), limiter.fallbacks))
        finally:
            await limiter.aclose()
            redis.stop()
        return out

    limits = [None, None, "requests"]
    # in Redis; then away, in process with the same limits; then back in Redis
    assert asyncio.run(run()) == [(limits, 0), (limits, 3), (limits, 3)]
