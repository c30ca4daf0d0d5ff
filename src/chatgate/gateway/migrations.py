"""The database schema, as an ordered list of migrations (never edit one that has shipped: add one).

Each migration is a list of SQL statements valid on SQLite and PostgreSQL. ``_chatgate_migrations``
records which have run; :func:`migrate` runs the rest, each in its own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "001_api_keys",
        (
            """
            CREATE TABLE api_keys (
                id VARCHAR(40) PRIMARY KEY,
                name VARCHAR(200) NOT NULL,
                prefix VARCHAR(20) NOT NULL,
                key_hash CHAR(64) NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT,
                revoked_at BIGINT,
                allowed_models TEXT,
                metadata TEXT NOT NULL DEFAULT '{}'
            )
            """,
            "CREATE UNIQUE INDEX ix_api_keys_key_hash ON api_keys (key_hash)",
        ),
    ),
    Migration(
        "002_key_rate_limits",
        (
            "ALTER TABLE api_keys ADD COLUMN rpm INTEGER",
            "ALTER TABLE api_keys ADD COLUMN tpm INTEGER",
        ),
    ),
)
"""Times are integer Unix seconds; ``allowed_models`` is a JSON array or NULL (every model)."""

BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS _chatgate_migrations (
    name VARCHAR(100) PRIMARY KEY,
    applied_at BIGINT NOT NULL
)
"""
