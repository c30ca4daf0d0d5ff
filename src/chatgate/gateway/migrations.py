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
    Migration(
        "003_budgets_ledger_stored",
        (
            "ALTER TABLE api_keys ADD COLUMN max_budget BIGINT",
            "ALTER TABLE api_keys ADD COLUMN budget_period VARCHAR(10)",
            "ALTER TABLE api_keys ADD COLUMN cache BOOLEAN",
            """
            CREATE TABLE budget_spend (
                key_id VARCHAR(40) NOT NULL,
                period_start BIGINT NOT NULL,
                spent BIGINT NOT NULL DEFAULT 0,
                reserved BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (key_id, period_start)
            )
            """,
            """
            CREATE TABLE usage_ledger (
                request_id VARCHAR(40) PRIMARY KEY,
                created_at BIGINT NOT NULL,
                day CHAR(10) NOT NULL,
                key_id VARCHAR(40),
                model VARCHAR(200),
                deployment VARCHAR(300),
                prompt_tokens INTEGER NOT NULL DEFAULT 0,
                completion_tokens INTEGER NOT NULL DEFAULT 0,
                cached_tokens INTEGER NOT NULL DEFAULT 0,
                cost BIGINT NOT NULL DEFAULT 0,
                latency_ms INTEGER NOT NULL,
                ttft_ms INTEGER,
                status INTEGER NOT NULL,
                error_type VARCHAR(60),
                cache_hit BOOLEAN NOT NULL DEFAULT FALSE
            )
            """,
            "CREATE INDEX ix_usage_ledger_key_day ON usage_ledger (key_id, day)",
            "CREATE INDEX ix_usage_ledger_model_day ON usage_ledger (model, day)",
            "CREATE INDEX ix_usage_ledger_day ON usage_ledger (day)",
            """
            CREATE TABLE stored_completions (
                id VARCHAR(60) PRIMARY KEY,
                owner VARCHAR(40) NOT NULL,
                model VARCHAR(200) NOT NULL,
                created_at BIGINT NOT NULL,
                seq BIGINT NOT NULL,
                metadata TEXT NOT NULL DEFAULT '{}',
                request TEXT NOT NULL,
                completion TEXT NOT NULL
            )
            """,
            "CREATE INDEX ix_stored_completions_owner_seq ON stored_completions (owner, seq)",
        ),
    ),
    Migration(
        "004_budget_leases",
        (
            """
            CREATE TABLE budget_leases (
                id VARCHAR(40) PRIMARY KEY,
                key_id VARCHAR(40) NOT NULL,
                period_start BIGINT NOT NULL,
                amount BIGINT NOT NULL,
                holder VARCHAR(100) NOT NULL,
                expires_at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX ix_budget_leases_holder ON budget_leases (holder)",
            "CREATE INDEX ix_budget_leases_expires_at ON budget_leases (expires_at)",
        ),
    ),
    Migration(
        "005_ledger_endpoint",
        ("ALTER TABLE usage_ledger ADD COLUMN endpoint VARCHAR(40) NOT NULL DEFAULT 'chat.completions'",),
    ),
    Migration(
        "006_stored_responses",
        (
            """
            CREATE TABLE stored_responses (
                id VARCHAR(80) PRIMARY KEY,
                owner VARCHAR(40) NOT NULL,
                created_at BIGINT NOT NULL,
                seq BIGINT NOT NULL,
                previous_response_id VARCHAR(80),
                response TEXT NOT NULL,
                input_items TEXT NOT NULL
            )
            """,
            "CREATE INDEX ix_stored_responses_owner_seq ON stored_responses (owner, seq)",
            """
            CREATE TABLE response_items (
                owner VARCHAR(40) NOT NULL,
                id VARCHAR(80) NOT NULL,
                response_id VARCHAR(80) NOT NULL,
                item TEXT NOT NULL,
                PRIMARY KEY (owner, id)
            )
            """,
            "CREATE INDEX ix_response_items_response ON response_items (response_id)",
        ),
    ),
)
"""Times are integer Unix seconds; ``allowed_models`` is a JSON array or NULL (every model); money
(``max_budget``, ``spent``, ``reserved``, ``cost``, a lease's ``amount``) is integer micro-USD; ``day`` is the
UTC date. A budget lease's ``amount`` is part of its period's ``budget_spend.reserved``; ``holder`` names
the replica (process) holding it.
``stored_responses.input_items`` is the JSON array of every item the response answered (earlier turns
included); ``response_items`` indexes each response's output items by id, for ``item_reference``."""

BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS _chatgate_migrations (
    name VARCHAR(100) PRIMARY KEY,
    applied_at BIGINT NOT NULL
)
"""
