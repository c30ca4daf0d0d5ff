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
                 "metadata", "rpm", "tpm", "max_budget", "budget_period", "cache"],
    "budget_spend": ["key_id", "period_start", "spent", "reserved"],
    "budget_leases": ["id", "key_id", "period_start", "amount", "holder", "expires_at"],
    "usage_ledger": ["request_id", "created_at", "day", "key_id", "model", "deployment", "prompt_tokens",
                     "completion_tokens", "cached_tokens", "cost", "latency_ms", "ttft_ms", "status", "error_type",
                     "cache_hit", "endpoint"],
    "stored_completions": ["id", "owner", "model", "created_at", "seq", "metadata", "request", "completion"],
    "stored_responses": ["id", "owner", "created_at", "seq", "previous_response_id", "response", "input_items"],
    "response_items": ["owner", "id", "response_id", "item"],
}  # fmt: skip
INDEXES = {
    "api_keys": {"ix_api_keys_key_hash"},
    "usage_ledger": {"ix_usage_ledger_key_day", "ix_usage_ledger_model_day", "ix_usage_ledger_day"},
    "stored_completions": {"ix_stored_completions_owner_seq"},
    "budget_leases": {"ix_budget_leases_holder", "ix_budget_leases_expires_at"},
    "stored_responses": {"ix_stored_responses_owner_seq"},
    "response_items": {"ix_response_items_response"},
}


def test_migrations_apply_once_to_the_expected_schema(db_url: tuple[str, str | None]) -> None:
    async def run() -> tuple[list[str], list[str], dict[str, list[str]], dict[str, set[str | None]]]:
        engine = engine_for(db_url)
        try:
            first = await migrate(engine)
            second = await migrate(engine)
            async with engine.connect() as conn:
                tables = await conn.run_sync(lambda c: {t: [col["name"] for col in inspect(c).get_columns(t)]
                                                        for t in inspect(c).get_table_names()})  # fmt: skip
                indexes = await conn.run_sync(lambda c: {t: {i["name"] for i in inspect(c).get_indexes(t)}
                                                         for t in INDEXES})  # fmt: skip
        finally:
            await engine.dispose()
        return first, second, tables, indexes

    first, second, tables, indexes = asyncio.run(run())
    assert first == [m.name for m in MIGRATIONS] and second == []
    assert tables == EXPECTED
    assert indexes == INDEXES


def test_default_database_is_a_sqlite_file_in_the_data_dir(tmp_path: object) -> None:
    url = database_url(None, str(tmp_path))
    assert url.startswith("sqlite+aiosqlite:///") and url.endswith("chatgate.db")
    assert database_url("postgresql://u@h/db", "x") == "postgresql+asyncpg://u@h/db"
