"""Migrations on SQLite and PostgreSQL: they apply once, in order, to the exact expected schema."""

from __future__ import annotations

import asyncio

from sqlalchemy import inspect

from chatgate.gateway.migrations import MIGRATIONS
from chatgate.gateway.store import database_url, migrate
from tests.gateway.conftest import engine_for

EXPECTED = {
    "_chatgate_migrations": ["name", "applied_at"],
    "api_keys": ["id", "name", "prefix", "key_hash", "created_at", "expires_at", "revoked_at", "allowed_models",
                 "metadata", "rpm", "tpm"],
}  # fmt: skip


def test_migrations_apply_once_to_the_expected_schema(db_url: tuple[str, str | None]) -> None:
    async def run() -> tuple[list[str], list[str], dict[str, list[str]], list[str | None]]:
        engine = engine_for(db_url)
        try:
            first = await migrate(engine)
            second = await migrate(engine)
            async with engine.connect() as conn:
                tables = await conn.run_sync(lambda c: {t: [col["name"] for col in inspect(c).get_columns(t)]
                                                        for t in inspect(c).get_table_names()})  # fmt: skip
                indexes = await conn.run_sync(lambda c: [i["name"] for i in inspect(c).get_indexes("api_keys")])
        finally:
            await engine.dispose()
        return first, second, tables, indexes

    first, second, tables, indexes = asyncio.run(run())
    assert first == [m.name for m in MIGRATIONS] and second == []
    assert tables == EXPECTED
    assert "ix_api_keys_key_hash" in indexes


def test_default_database_is_a_sqlite_file_in_the_data_dir(tmp_path: object) -> None:
    url = database_url(None, str(tmp_path))
    assert url.startswith("sqlite+aiosqlite:///") and url.endswith("chatgate.db")
    assert database_url("postgresql://u@h/db", "x") == "postgresql+asyncpg://u@h/db"
