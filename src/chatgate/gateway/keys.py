"""Virtual API keys: created by the admin, shown once, stored only as a SHA-256 hash, listed by
prefix, revocable, expirable, and limitable to a set of models.

Keys are 256 bits of randomness, so an unsalted SHA-256 is a safe way to store them; lookup is by
hash, and the stored hash is compared again in constant time. A key is never logged nor echoed.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chatgate.errors import AuthenticationError, NotFoundError
from chatgate.exchange import Grant, Period
from chatgate.gateway.store import autocommit
from chatgate.pricing import usd

KEY_PREFIX = "sk-cg-"
SHOWN_PREFIX = 12


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class KeyRecord:
    id: str
    name: str
    prefix: str
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None
    allowed_models: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    rpm: int | None = None
    """Requests per minute this key may make (None: unlimited)."""
    tpm: int | None = None
    """Tokens per minute (prompt estimate plus max_tokens, as OpenAI counts them) (None: unlimited)."""
    max_budget: int | None = None
    """Micro-USD this key may spend per budget period (None: no budget)."""
    budget_period: Period | None = None
    """When spend starts again from zero: ``daily``, ``weekly``, ``monthly`` (UTC), or never (None)."""
    cache: bool | None = None
    """Response cache for this key: on, off, or the server's default (None)."""

    def public(self) -> dict[str, Any]:
        """What the admin API shows: everything but the hash (the key itself is never stored)."""
        return {
            "id": self.id, "object": "api_key", "name": self.name, "prefix": self.prefix,
            "created_at": self.created_at, "expires_at": self.expires_at, "revoked_at": self.revoked_at,
            "allowed_models": self.allowed_models, "metadata": self.metadata, "rpm": self.rpm, "tpm": self.tpm,
            "max_budget": None if self.max_budget is None else usd(self.max_budget),
            "budget_period": self.budget_period, "cache": self.cache,
        }  # fmt: skip

    def allows(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models

    @functools.cached_property
    def grant(self) -> Grant:
        """What this key allows a request, as the gateway enforces it (made once per record)."""
        models = frozenset(self.allowed_models) if self.allowed_models is not None else None
        return Grant(self.id, models, self.rpm, self.tpm, self.max_budget, self.budget_period, self.cache)


_COLUMNS = (
    "id, name, prefix, created_at, expires_at, revoked_at, allowed_models, metadata, rpm, tpm, max_budget, "
    "budget_period, cache"
)
_SETTABLE = ("name", "expires_at", "allowed_models", "metadata", "rpm", "tpm", "max_budget", "budget_period", "cache")


def _record(row: Any) -> KeyRecord:
    allowed = json.loads(row.allowed_models) if row.allowed_models is not None else None
    cache = None if row.cache is None else bool(row.cache)
    return KeyRecord(row.id, row.name, row.prefix, row.created_at, row.expires_at, row.revoked_at, allowed,
                     json.loads(row.metadata or "{}"), row.rpm, row.tpm, row.max_budget, row.budget_period,
                     cache)  # fmt: skip


def _params(record: KeyRecord) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "expires_at": record.expires_at,
            "allowed_models": _json_or_null(record.allowed_models), "metadata": json.dumps(record.metadata),
            "rpm": record.rpm, "tpm": record.tpm, "max_budget": record.max_budget,
            "budget_period": record.budget_period, "cache": record.cache}  # fmt: skip


CACHE_SECONDS = 2.0
"""How long a replica trusts a key record it read: a change made through another replica (a revocation,
new limits) applies there within this time; through this one, at once."""


class KeyStore:
    def __init__(self, engine: AsyncEngine, cache_seconds: float = CACHE_SECONDS) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, KeyRecord]] = {}
        self._loading: dict[str, asyncio.Future[KeyRecord]] = {}
        self._single = autocommit(engine)

    async def create(
        self,
        name: str,
        **settings: Any,
    ) -> tuple[KeyRecord, str]:
        """A new key: its record and the key itself, which is not kept and cannot be shown again.

        ``settings``: any of ``expires_at``, ``allowed_models``, ``metadata``, ``rpm``, ``tpm``,
        ``max_budget`` (micro-USD), ``budget_period``, ``cache``."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord(id="key_" + secrets.token_hex(12), name=name, prefix=key[:SHOWN_PREFIX],
                           created_at=int(time.time()))  # fmt: skip
        _apply(record, settings)
        async with self.engine.begin() as conn:
            await conn.execute(
                text(f"INSERT INTO api_keys ({_COLUMNS}, key_hash) VALUES (:id, :name, :prefix, :created_at, "
                     ":expires_at, NULL, :allowed_models, :metadata, :rpm, :tpm, :max_budget, :budget_period, "
                     ":cache, :hash)"),
                {**_params(record), "prefix": record.prefix, "created_at": record.created_at, "hash": hash_key(key)},
            )  # fmt: skip
        return record, key

    async def list(self) -> list[KeyRecord]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(text(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id"))
            return [_record(r) for r in rows]

    async def get(self, key_id: str) -> KeyRecord:
        async with self.engine.connect() as conn:
            row = (await conn.execute(text(f"SELECT {_COLUMNS} FROM api_keys WHERE id = :id"), {"id": key_id})).first()
        if row is None:
            raise NotFoundError(f"No API key with id '{key_id}'.", code="key_not_found")
        return _record(row)

    async def update(self, key_id: str, **changes: Any) -> KeyRecord:
        """Change any of the settings :meth:`create` takes (and ``name``)."""
        record = await self.get(key_id)
        _apply(record, changes)
        assignments = ", ".join(f"{name} = :{name}" for name in _SETTABLE)
        async with self.engine.begin() as conn:
            await conn.execute(text(f"UPDATE api_keys SET {assignments} WHERE id = :id"), _params(record))
        self._cache.clear()
        return record

    async def revoke(self, key_id: str) -> KeyRecord:
        record = await self.get(key_id)
        if record.revoked_at is None:
            record.revoked_at = int(time.time())
            async with self.engine.begin() as conn:
                await conn.execute(text("UPDATE api_keys SET revoked_at = :t WHERE id = :id"),
                                   {"t": record.revoked_at, "id": key_id})  # fmt: skip
            self._cache.clear()
        return record

    async def authenticate(self, key: str) -> KeyRecord:
        """The live record of ``key``; 401 ``invalid_api_key`` for unknown, revoked or expired keys."""
        digest = hash_key(key)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            record = cached[1]
        else:
            loading = self._loading.get(digest)
            if loading is None:  # one query per key, however many of its requests arrive meanwhile
                loading = self._loading[digest] = asyncio.ensure_future(self._load(digest))
                loading.add_done_callback(lambda _: self._loading.pop(digest, None))
            record = await asyncio.shield(loading)
        if record.revoked_at is not None:
            raise AuthenticationError("This API key has been revoked.", code="invalid_api_key")
        if record.expires_at is not None and record.expires_at <= time.time():
            raise AuthenticationError("This API key has expired.", code="invalid_api_key")
        return record

    async def _load(self, digest: str) -> KeyRecord:
        """The record with this hash, from the database, kept for ``cache_seconds``; 401 when there is none."""
        query = text(f"SELECT {_COLUMNS}, key_hash FROM api_keys WHERE key_hash = :h")
        async with self._single.connect() as conn:
            row = (await conn.execute(query, {"h": digest})).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            raise AuthenticationError("Incorrect API key provided.", code="invalid_api_key")
        record = _record(row)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + self.cache_seconds, record)
        return record


def _apply(record: KeyRecord, changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        if name not in _SETTABLE:
            raise TypeError(f"not a key setting: {name}")
        setattr(record, name, value if name != "metadata" else (value or {}))
    record.__dict__.pop("grant", None)  # made again from the new settings


def _json_or_null(value: list[str] | None) -> str | None:
    return None if value is None else json.dumps(value)
