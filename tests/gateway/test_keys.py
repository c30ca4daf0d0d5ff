"""API keys on SQLite and PostgreSQL: shown once, stored hashed, revocable, expirable, kept."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text

from chatgate.errors import AuthenticationError, NotFoundError
from chatgate.gateway.keys import KEY_PREFIX, KeyStore, hash_key
from tests.gateway.conftest import engine_for, migrated


def test_a_key_is_shown_once_and_stored_only_hashed(db_url: tuple[str, str | None]) -> None:
    async def run() -> None:
        engine = await migrated(db_url)
        try:
            store = KeyStore(engine)
            record, key = await store.create("ci", allowed_models=["gpt-4"])
            assert key.startswith(KEY_PREFIX) and len(key) > 40 and record.prefix == key[:12]
            async with engine.connect() as conn:
                dump = " ".join(str(v) for row in await conn.execute(text("SELECT * FROM api_keys")) for v in row)
            assert key not in dump and hash_key(key) in dump
            assert (await store.authenticate(key)).id == record.id
            assert key not in str(record.public())
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_unknown_revoked_and_expired_keys_are_refused(db_url: tuple[str, str | None]) -> None:
    async def run() -> None:
        engine = await migrated(db_url)
        try:
            store = KeyStore(engine)
            with pytest.raises(AuthenticationError) as err:
                await store.authenticate(KEY_PREFIX + "nope")
            assert err.value.code == "invalid_api_key" and "nope" not in err.value.message
            revoked, revoked_key = await store.create("old")
            await store.revoke(revoked.id)
            with pytest.raises(AuthenticationError, match="revoked"):
                await store.authenticate(revoked_key)
            _, expired_key = await store.create("temp", expires_at=int(time.time()) - 1)
            with pytest.raises(AuthenticationError, match="expired"):
                await store.authenticate(expired_key)
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_keys_are_listed_updated_and_kept_across_restarts(db_url: tuple[str, str | None]) -> None:
    async def run() -> None:
        engine = await migrated(db_url)
        store = KeyStore(engine)
        a, key_a = await store.create("a")
        await store.create("b", metadata={"team": "x"})
        await store.update(a.id, name="renamed", allowed_models=["m1"])
        await engine.dispose()
        engine = engine_for(db_url)  # a restart: a new engine on the same database
        try:
            store = KeyStore(engine)
            names = [k.name for k in await store.list()]
            assert sorted(names) == ["b", "renamed"]  # listed by creation second, then id
            record = await store.authenticate(key_a)
            assert record.allowed_models == ["m1"] and record.allows("m1") and not record.allows("m2")
            with pytest.raises(NotFoundError):
                await store.get("key_missing")
        finally:
            await engine.dispose()

    asyncio.run(run())
