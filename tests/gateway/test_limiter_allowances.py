"""Rate limits in Redis taken as allowances: a replica asks Redis once per block of a key's limit, and
across replicas a key never gets more than its limit."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from chatgate.gateway.limiter import ALLOWANCE_SHARE, RedisLimiter, open_limiter
from tests.gateway.test_limits import REDIS, clear_of_minute_boundary, needs_redis


class Counted:
    """A replica's limiter, with the number of times it asked Redis."""

    def __init__(self) -> None:
        limiter = open_limiter(REDIS)
        assert isinstance(limiter, RedisLimiter)
        self.limiter = limiter
        self.asked = 0
        script = limiter._script

        async def counted(**kwargs: Any) -> Any:
            self.asked += 1
            return await script(**kwargs)

        limiter._script = counted


@needs_redis
def test_two_replicas_never_admit_more_than_the_limit_and_ask_redis_once_per_block() -> None:
    clear_of_minute_boundary()
    rpm = 4 * ALLOWANCE_SHARE  # blocks of 4 requests

    async def run() -> tuple[int, list[int]]:
        replicas = [Counted(), Counted()]
        key = "key_" + secrets.token_hex(6)
        try:
            verdicts = await asyncio.gather(*(replicas[i % 2].limiter.check(key, rpm, None, 1) for i in range(rpm)))
        finally:
            for r in replicas:
                await r.limiter.aclose()
        return sum(v.refused is None for v in verdicts), [r.asked for r in replicas]

    admitted, asked = asyncio.run(run())
    assert rpm - 2 * 4 < admitted <= rpm  # at most one block unused per replica
    assert sum(asked) <= rpm // 4 + 4  # a round trip per block (and per refusal), not per request


@needs_redis
def test_a_small_limit_is_counted_request_by_request_exactly() -> None:
    clear_of_minute_boundary()

    async def run() -> list[str | None]:
        replicas = [Counted(), Counted()]
        key = "key_" + secrets.token_hex(6)
        try:
            return [(await replicas[i % 2].limiter.check(key, 5, None, 1)).refused for i in range(8)]
        finally:
            for r in replicas:
                await r.limiter.aclose()

    assert asyncio.run(run()) == [None] * 5 + ["requests"] * 3


@needs_redis
def test_tokens_come_in_blocks_and_a_large_request_takes_what_it_needs() -> None:
    clear_of_minute_boundary()
    tpm = 100 * ALLOWANCE_SHARE  # blocks of 100 tokens

    async def run() -> tuple[list[str | None], int, dict[str, str]]:
        replica = Counted()
        key = "key_" + secrets.token_hex(6)
        try:
            small = [(await replica.limiter.check(key, None, tpm, 10)).refused for _ in range(10)]
            asked = replica.asked
            big = await replica.limiter.check(key, None, tpm, 1000)
            return [*small, big.refused], asked, big.headers()
        finally:
            await replica.limiter.aclose()

    refused, asked, headers = asyncio.run(run())
    assert refused == [None] * 11 and asked == 1  # ten requests of 10 tokens from one block of 100
    assert headers["x-ratelimit-remaining-tokens"] == str(tpm - 1100)
