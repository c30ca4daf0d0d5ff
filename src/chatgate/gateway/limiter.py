"""Per-key requests- and tokens-per-minute limits, in fixed one-minute windows.

In-process by default; with Redis (``redis_url``) the counters live there and every replica shares
them, so N replicas enforce one limit, not N. Each check-and-count is atomic (a Lua script in
Redis, a lock in process); a refused request does not count.

A replica does not ask Redis for every request: it takes an *allowance* — a block of the key's
requests and tokens in the current window, ``1/ALLOWANCE_SHARE`` of each limit (at least what the
request needs) — in one atomic script that never grants more than the limit leaves, and admits
requests from it in memory until it runs out. Across replicas a key can therefore never get more than
its limit; what a replica took and did not use by the end of the window is lost for that window (at
most 1/32 of a limit per replica), and the ``x-ratelimit-remaining-*`` headers count it as used. A
limit under 32 is counted request by request in Redis, exactly.

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
ALLOWANCE_SHARE = 32
"""A replica takes 1/32 of a key's limits at a time from Redis."""

# An allowance: at least ``need`` requests (0 or 1) and ``n`` tokens (else refused, nothing counted), up
# to ``gr`` requests and ``gt`` tokens, never past a limit; the counters count what was granted.
_SCRIPT = """
local r = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = tonumber(redis.call('GET', KEYS[2]) or '0')
local rpm, tpm, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local gr, gt, need = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if rpm > 0 and r + need > rpm then return {r, t, 1, 0, 0} end
if tpm > 0 and t + n > tpm then return {r, t, 2, 0, 0} end
if rpm > 0 and r + gr > rpm then gr = rpm - r end
if tpm > 0 and t + gt > tpm then gt = tpm - t end
r = redis.call('INCRBY', KEYS[1], gr)
redis.call('EXPIRE', KEYS[1], 120)
t = redis.call('INCRBY', KEYS[2], gt)
redis.call('EXPIRE', KEYS[2], 120)
return {r, t, 0, gr, gt}
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


@dataclass
class _Allowance:
    """What this replica may still admit for one key in one window, and the shared counts it last saw."""

    window: int
    requests: int = 0
    tokens: int = 0
    counted_requests: int = 0
    counted_tokens: int = 0

    def covers(self, rpm: int | None, tpm: int | None, tokens: int) -> bool:
        return (rpm is None or self.requests >= 1) and (tpm is None or self.tokens >= tokens)

    def verdict(self, rpm: int | None, tpm: int | None, reset: float) -> Verdict:
        """The counts as the headers show them: granted to every replica, less what this one still holds."""
        used = (self.counted_requests - self.requests, self.counted_tokens - self.tokens)
        return _verdict(rpm, tpm, used, 0, reset)


class RedisLimiter:
    """Counters in Redis, shared by every replica that points at it, taken in allowances; in process
    while it is away."""

    def __init__(self, client: Any, prefix: str = "chatgate:rl", retry_seconds: float = RETRY_SECONDS) -> None:
        self._redis = client
        self._prefix = prefix
        self._script = client.register_script(_SCRIPT)
        self._local = MemoryLimiter()
        self._outage = Outage("rate limiter", "counting in this process", retry_seconds)
        self._allowances: dict[str, _Allowance] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.fallbacks = 0

    async def check(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int) -> Verdict:
        if not self._outage.skipping():
            window, reset = _window(time.time())
            held: _Allowance | Verdict | None = self._allowances.get(key_id)
            if not isinstance(held, _Allowance) or held.window != window or not held.covers(rpm, tpm, tokens):
                lock = self._locks.setdefault(key_id, asyncio.Lock())
                async with lock:  # one request per key asks Redis; the others then use its allowance
                    held = await self._allowance(key_id, rpm, tpm, tokens)
            if isinstance(held, Verdict):
                return held
            if held is not None:
                held.requests -= 1
                held.tokens -= tokens
                return held.verdict(rpm, tpm, reset)
        self.fallbacks += 1
        return await self._local.check(key_id, rpm, tpm, tokens)

    async def _allowance(
        self, key_id: str, rpm: int | None, tpm: int | None, tokens: int
    ) -> _Allowance | Verdict | None:
        """This replica's allowance for the request, taken from Redis when it has too little; a refusal;
        None when Redis is away."""
        window, reset = _window(time.time())
        held = self._allowances.get(key_id)
        if held is not None and held.window == window and held.covers(rpm, tpm, tokens):
            return held  # another request of this key took one meanwhile
        if held is None or held.window != window:
            held = self._allowances[key_id] = _Allowance(window)
            if len(self._allowances) > 100_000:  # keys seen in old windows
                self._allowances = {k: a for k, a in self._allowances.items() if a.window == window}
                self._locks = {k: lock for k, lock in self._locks.items() if lock.locked()}
        need_r, need_t = (0 if held.requests >= 1 else 1), max(0, tokens - held.tokens)
        want_r = max(need_r, (rpm or 0) // ALLOWANCE_SHARE)
        want_t = max(need_t, (tpm or 0) // ALLOWANCE_SHARE)
        base = f"{self._prefix}:{key_id}:{window}"
        try:
            r, t, code, granted_r, granted_t = await self._script(
                keys=[f"{base}:r", f"{base}:t"], args=[rpm or 0, tpm or 0, need_t, want_r, want_t, need_r]
            )
        except FAILURES as exc:
            self._outage.failed(exc)
            return None
        self._outage.succeeded()
        held.counted_requests, held.counted_tokens = int(r), int(t)
        if int(code):
            return _verdict(rpm, tpm, (int(r) - held.requests, int(t) - held.tokens), int(code), reset)
        held.requests += int(granted_r)
        held.tokens += int(granted_t)
        return held

    async def aclose(self) -> None:
        await self._redis.aclose()


def open_limiter(redis_url: str | None, timeout: float = 1.0) -> Limiter:
    """The limiter: Redis at ``redis_url`` (each call bounded by ``timeout`` seconds), else in process."""
    if not redis_url:
        return MemoryLimiter()
    import redis.asyncio  # noqa: PLC0415  (only when configured)

    client = redis.asyncio.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    return RedisLimiter(client)
