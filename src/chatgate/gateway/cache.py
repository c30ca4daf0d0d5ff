"""The response cache: exact matches of deterministic requests, in memory (LRU) or in Redis, with a TTL.

Only deterministic requests are cached: temperature 0, or a seed. The key is a SHA-256 of the
normalised request (every field that shapes the answer, in canonical JSON; not ``stream``,
``stream_options``, ``user``, ``metadata``, ``store`` and the like) and of the caller's key id: a
cache entry is never served to another key.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from typing import Any, Protocol

from chatgate.gateway.outage import FAILURES, Outage
from chatgate.protocol import ChatCompletionRequest

NOT_PART_OF_THE_ANSWER = frozenset({"stream", "stream_options", "user", "metadata", "store", "safety_identifier",
                                    "prompt_cache_key", "service_tier", "timeout", "retries"})  # fmt: skip


def deterministic(req: ChatCompletionRequest) -> bool:
    return req.temperature == 0 or req.seed is not None


def cache_key(req: ChatCompletionRequest, owner: str) -> str:
    shape = req.model_dump(mode="json", exclude_none=True, exclude=set(NOT_PART_OF_THE_ANSWER))
    canonical = json.dumps([owner, shape], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str) -> None: ...

    async def aclose(self) -> None: ...


class MemoryCache:
    """Least recently used entries go first once ``max_entries`` is reached; expired ones on access."""

    def __init__(self, ttl_seconds: int, max_entries: int) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    async def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    async def put(self, key: str, value: str) -> None:
        self._entries[key] = (time.monotonic() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def aclose(self) -> None:
        self._entries.clear()


class RedisCache:
    """Entries in Redis (``SET … EX ttl``), shared by every replica; while Redis is away, every lookup
    is a miss and nothing is kept (see :mod:`chatgate.gateway.outage`)."""

    def __init__(self, client: Any, ttl_seconds: int, prefix: str = "chatgate:cache") -> None:
        self._redis = client
        self.ttl = ttl_seconds
        self._prefix = prefix
        self._outage = Outage("response cache", "answering without it")

    async def get(self, key: str) -> str | None:
        if self._outage.skipping():
            return None
        try:
            value = await self._redis.get(f"{self._prefix}:{key}")
        except FAILURES as exc:
            self._outage.failed(exc)
            return None
        self._outage.succeeded()
        return None if value is None else value.decode() if isinstance(value, bytes) else str(value)

    async def put(self, key: str, value: str) -> None:
        if self._outage.skipping():
            return
        try:
            await self._redis.set(f"{self._prefix}:{key}", value, ex=self.ttl)
        except FAILURES as exc:
            self._outage.failed(exc)

    async def aclose(self) -> None:
        await self._redis.aclose()


def open_cache(
    redis_url: str | None, *, use_redis: bool, ttl_seconds: int, max_entries: int, timeout: float = 1.0
) -> ResponseCache:
    if redis_url and use_redis:
        import redis.asyncio  # noqa: PLC0415  (only when configured)

        client = redis.asyncio.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return RedisCache(client, ttl_seconds)
    return MemoryCache(ttl_seconds, max_entries)
