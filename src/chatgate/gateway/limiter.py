"""Per-key requests- and tokens-per-minute limits, in fixed one-minute windows.

In-process by default; with Redis (``redis_url``) the counters live there and every replica shares
them, so N replicas enforce one limit, not N. Each check-and-count is atomic (a Lua script in
Redis, a lock in process); a refused request does not count.

Redis away (refused, reset, or silent past ``redis_timeout_seconds``) never fails a request: the
replica logs one warning and counts in process instead, so each replica still enforces the limits on
its own (N replicas admit up to N times a limit until Redis is back). Every check counted that way
adds one to ``chatgate_rate_limit_fallbacks_total`` in ``/metrics``; Redis is tried again after
``outage.RETRY_SECONDS``, and its return is logged.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from chatgate.gateway.outage import FAILURES, RETRY_SECONDS, Outage

WINDOW = 60

_SCRIPT = """
local r = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = tonumber(redis.call('GET', KEYS[2]) or '0')
local rpm, tpm, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if rpm > 0 and r + 1 > rpm then return {r, t, 1} end
if tpm > 0 and t + n > tpm then return {r, t, 2} end
r = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 120)
t = redis.call('INCRBY', KEYS[2], n)
redis.call('EXPIRE', KEYS[2], 120)
return {r, t, 0}
"""


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check, and what the ``x-ratelimit-*`` headers say."""

    rpm: int | None
    tpm: int | None
    requests: int
    tokens: int
    reset: float
    refused: Literal["requests", "tokens"] | None = None

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        reset = f"{self.reset:.3g}s"
        if self.rpm is not None:
            out |= {"x-ratelimit-limit-requests": str(self.rpm),
                    "x-ratelimit-remaining-requests": str(max(0, self.rpm - self.requests)),
                    "x-ratelimit-reset-requests": reset}  # fmt: skip
        if self.tpm is not None:
            out |= {"x-ratelimit-limit-tokens": str(self.tpm),
                    "x-ratelimit-remaining-tokens": str(max(0, self.tpm - self.tokens)),
                    "x-ratelimit-reset-tokens": reset}  # fmt: skip
        return out


class Limiter(Protocol):
    fallbacks: int
    """Checks counted in process because the shared store (Redis) could not be reached."""

    async def check(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int) -> Verdict: ...

    async def aclose(self) -> None: ...


def _window(now: float) -> tuple[int, float]:
    return int(now // WINDOW), WINDOW - now % WINDOW


def _verdict(rpm: int | None, tpm: int | None, counts: tuple[int, int], code: int, reset: float) -> Verdict:
    refused: Literal["requests", "tokens"] | None = "requests" if code == 1 else "tokens" if code == 2 else None
    return Verdict(rpm, tpm, counts[0], counts[1], reset, refused)


class MemoryLimiter:
    """Counters in this process (one replica)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], list[int]] = {}
        self._lock = asyncio.Lock()
        self.fallbacks = 0

    async def check(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int) -> Verdict:
        window, reset = _window(time.time())
        async with self._lock:
            for old in [k for k in self._counts if k[1] < window]:
                del self._counts[old]
            counts = self._counts.setdefault((key_id, window), [0, 0])
            if rpm is not None and counts[0] + 1 > rpm:
                return _verdict(rpm, tpm, (counts[0], counts[1]), 1, reset)
            if tpm is not None and counts[1] + tokens > tpm:
                return _verdict(rpm, tpm, (counts[0], counts[1]), 2, reset)
            counts[0] += 1
            counts[1] += tokens
            return _verdict(rpm, tpm, (counts[0], counts[1]), 0, reset)

    async def aclose(self) -> None:
        return None


class RedisLimiter:
    """Counters in Redis, shared by every replica that points at it; in process while it is away."""

    def __init__(self, client: Any, prefix: str = "chatgate:rl", retry_seconds: float = RETRY_SECONDS) -> None:
        self._redis = client
        self._prefix = prefix
        self._script = client.register_script(_SCRIPT)
        self._local = MemoryLimiter()
        self._outage = Outage("rate limiter", "counting in this process", retry_seconds)
        self.fallbacks = 0

    async def check(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int) -> Verdict:
        if not self._outage.skipping():
            window, reset = _window(time.time())
            base = f"{self._prefix}:{key_id}:{window}"
            try:
                r, t, code = await self._script(keys=[f"{base}:r", f"{base}:t"], args=[rpm or 0, tpm or 0, tokens])
            except FAILURES as exc:
                self._outage.failed(exc)
            else:
                self._outage.succeeded()
                return _verdict(rpm, tpm, (int(r), int(t)), int(code), reset)
        self.fallbacks += 1
        return await self._local.check(key_id, rpm, tpm, tokens)

    async def aclose(self) -> None:
        await self._redis.aclose()


def open_limiter(redis_url: str | None, timeout: float = 1.0) -> Limiter:
    """The limiter: Redis at ``redis_url`` (each call bounded by ``timeout`` seconds), else in process."""
    if not redis_url:
        return MemoryLimiter()
    import redis.asyncio  # noqa: PLC0415  (only when configured)

    client = redis.asyncio.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    return RedisLimiter(client)
