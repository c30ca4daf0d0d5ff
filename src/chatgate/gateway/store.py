"""The gateway's database: SQLAlchemy 2 (async) on SQLite (default, a file in the data directory)
or PostgreSQL (a URL), brought to the latest schema at start-up."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from chatgate.gateway.migrations import BOOKKEEPING, MIGRATIONS


def database_url(configured: str | None, data_dir: str) -> str:
    """The configured URL, or a SQLite file in ``data_dir``; ``postgresql://`` gets the asyncpg driver."""
    if not configured:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{Path(data_dir).resolve() / 'chatgate.db'}"
    if configured.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + configured.split("://", 1)[1]
    return configured


def open_engine(url: str, *, schema: str | None = None) -> AsyncEngine:
    """An engine for ``url``; ``schema`` (PostgreSQL) sets the search path, for isolated tests."""
    if url.startswith("postgresql+asyncpg://") and schema:
        return create_async_engine(url, connect_args={"server_settings": {"search_path": schema}})
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """WAL: readers never wait for the writer (spend queries during traffic); writers queue, not fail."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, each statement its own transaction: one round trip for a single-statement
    write or read (no BEGIN and COMMIT around it)."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


async def migrate(engine: AsyncEngine) -> list[str]:
    """Apply every migration not yet applied, in order; return the names applied now."""
    applied_now: list[str] = []
    async with engine.begin() as conn:
        await conn.execute(text(BOOKKEEPING))
        done = {row[0] for row in await conn.execute(text("SELECT name FROM _chatgate_migrations"))}
    for migration in MIGRATIONS:
        if migration.name in done:
            continue
        async with engine.begin() as conn:
            for statement in migration.statements:
                await conn.execute(text(statement))
            await conn.execute(
                text("INSERT INTO _chatgate_migrations (name, applied_at) VALUES (:n, :t)"),
                {"n": migration.name, "t": int(time.time())},
            )
        applied_now.append(migration.name)
    return applied_now
