"""Database engines for gateway tests: SQLite in a temporary directory, and the machine's real
PostgreSQL in a schema of its own (skipped, saying why, where PostgreSQL is absent)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from chatgate.gateway.store import database_url, migrate, open_engine

POSTGRES = "postgresql+asyncpg://root@127.0.0.1:5432/test"


def _postgres_schema() -> str | None:
    """A fresh schema on the local PostgreSQL, or None when it cannot be reached."""
    schema = "cg_test_" + secrets.token_hex(4)

    async def create() -> None:
        engine = create_async_engine(POSTGRES)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(f"CREATE SCHEMA {schema}"))
        finally:
            await engine.dispose()

    try:
        asyncio.run(create())
    except Exception:  # any failure to reach it means: not available here
        return None
    return schema


def _drop(schema: str) -> None:
    async def drop() -> None:
        engine = create_async_engine(POSTGRES)
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        await engine.dispose()

    asyncio.run(drop())


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(url, schema) of an empty database."""
    if request.param == "sqlite":
        yield database_url(None, str(tmp_path)), None
        return
    schema = _postgres_schema()
    if schema is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (database 'test')")
    yield POSTGRES, schema
    _drop(schema)


def engine_for(db: tuple[str, str | None]) -> AsyncEngine:
    return open_engine(db[0], schema=db[1])


async def migrated(db: tuple[str, str | None]) -> AsyncEngine:
    engine = engine_for(db)
    await migrate(engine)
    return engine


def _postgres_database() -> str | None:
    """A fresh database on the local PostgreSQL, for a whole server; None when it cannot be reached."""
    name = "cg_test_" + secrets.token_hex(4)

    async def create() -> None:
        engine = create_async_engine(POSTGRES, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f"CREATE DATABASE {name}"))
        finally:
            await engine.dispose()

    try:
        asyncio.run(create())
    except Exception:  # any failure to reach it means: not available here
        return None
    return name


def _drop_database(name: str) -> None:
    async def drop() -> None:
        engine = create_async_engine(POSTGRES, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        await engine.dispose()

    asyncio.run(drop())


@pytest.fixture(params=["sqlite", "postgresql"])
def server_database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The ``database_url`` setting of a server under test: None (SQLite in its data_dir) or a fresh
    PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    name = _postgres_database()
    if name is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (database 'test')")
    yield f"postgresql://root@127.0.0.1:5432/{name}"
    _drop_database(name)
