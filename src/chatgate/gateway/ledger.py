"""The usage ledger: one row per metered request, written in batches off the request path.

:meth:`Ledger.record` only appends to a list; a background task writes what has gathered every
``flush_seconds`` (or sooner when a batch fills) in one write: PostgreSQL's COPY, or one prepared
INSERT run over every row in SQLite (a few microseconds a row either way; the rows go to the driver
as plain tuples). :meth:`Ledger.aclose` writes the rest, so a normal shutdown loses nothing. Rows
that fail to write (database down) are kept and tried again, up to ``max_pending``; a batch the
database refuses as such (a value it will never take) is written row by row, and only the refused
rows are dropped, with an error line each.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from chatgate.exchange import Exchange
from chatgate.pricing import usd

log = logging.getLogger("chatgate.ledger")


@dataclass
class UsageRecord:
    request_id: str
    created_at: int
    key_id: str | None
    model: str | None
    deployment: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost: int
    """Micro-USD."""
    latency_ms: int
    ttft_ms: int | None
    status: int
    error_type: str | None
    cache_hit: bool
    endpoint: str = "chat.completions"
    """The API surface (``chat.completions``, ``responses``, ``messages``, ``completions``, ...)."""

    def values(self) -> tuple[Any, ...]:
        """The row, in :data:`COLUMNS` order."""
        return (self.request_id, self.created_at, self.day, self.key_id, self.model, self.deployment,
                self.prompt_tokens, self.completion_tokens, self.cached_tokens, self.cost, self.latency_ms,
                self.ttft_ms, self.status, self.error_type, self.cache_hit, self.endpoint)  # fmt: skip

    @classmethod
    def of(cls, ex: Exchange) -> UsageRecord:
        """The row of an ended exchange."""
        usage = ex.usage
        return cls(
            request_id=ex.request_id, created_at=int(ex.created_at), key_id=ex.key_id, model=_fit(ex.model, 200),
            deployment=_fit("cache" if ex.cache == "hit" else ex.deployment, 300),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cached_tokens=usage.prompt_tokens_details.cached_tokens if usage else 0, cost=ex.cost,
            latency_ms=ex.latency_ms(), ttft_ms=ex.ttft_ms(), status=ex.status, error_type=_fit(ex.error_type, 60),
            cache_hit=ex.cache == "hit", endpoint=_fit(ex.endpoint, 40) or "",
        )  # fmt: skip

    @property
    def day(self) -> str:
        return _day(self.created_at // 86400)


def _fit(value: str | None, size: int) -> str | None:
    """A string cut to its column's size (a 404 for a 5,000-character model name still leaves its row)."""
    return value[:size] if value is not None and len(value) > size else value


_REFUSED: tuple[type[BaseException], ...] = (IntegrityError, DataError, asyncpg.exceptions.DataError,
                                             asyncpg.exceptions.IntegrityConstraintViolationError)  # fmt: skip
"""The database refusing the rows themselves (not being away): trying them again would fail again."""


@functools.lru_cache(maxsize=16)  # the rows of a batch share a day or two
def _day(day_number: int) -> str:
    """UTC day ``day_number`` (days since the epoch) as YYYY-MM-DD."""
    return dt.datetime.fromtimestamp(day_number * 86400, dt.UTC).strftime("%Y-%m-%d")


COLUMNS = ("request_id", "created_at", "day", "key_id", "model", "deployment", "prompt_tokens", "completion_tokens",
           "cached_tokens", "cost", "latency_ms", "ttft_ms", "status", "error_type", "cache_hit",
           "endpoint")  # fmt: skip
_INSERT = f"INSERT INTO usage_ledger ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)})"
_SQLITE_ROWS = 500
"""Rows per SQLite INSERT (7,500 parameters, under SQLite's 32,766)."""


@functools.lru_cache(maxsize=8)
def _sqlite_insert(rows: int) -> str:
    one = "(" + ", ".join("?" for _ in COLUMNS) + ")"
    return f"INSERT INTO usage_ledger ({', '.join(COLUMNS)}) VALUES " + ", ".join([one] * rows)


class Ledger:
    def __init__(
        self, engine: AsyncEngine, *, flush_seconds: float = 1.0, batch: int = 500, max_pending: int = 100_000
    ) -> None:
        self.engine = engine
        self.flush_seconds = flush_seconds
        self.batch = batch
        self.max_pending = max_pending
        self._pending: list[UsageRecord] = []
        self._full = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def record(self, record: UsageRecord) -> None:
        """Queue one row (never blocks, never touches the database)."""
        if len(self._pending) >= self.max_pending:
            if self.dropped == 0:
                log.error("usage ledger: %d rows wait for the database; new rows are dropped", self.max_pending)
            self.dropped += 1
            return
        self.dropped = 0
        self._pending.append(record)
        if len(self._pending) >= self.batch:
            self._full.set()

    async def flush(self) -> int:
        """Write every queued row now; the number written."""
        async with self._lock:
            rows, self._pending = self._pending, []
            if not rows:
                return 0
            try:
                await self._write(rows)
            except _REFUSED:
                return await self._one_by_one(rows)
            except Exception as exc:
                log.error(
                    "usage ledger write failed (%s); %d rows kept for the next try", type(exc).__name__, len(rows)
                )
                self._pending[:0] = rows[: self.max_pending]
                return 0
            except BaseException:  # cancelled mid-write: the rows stay queued (the transaction rolled back)
                self._pending[:0] = rows
                raise
            return len(rows)

    async def _write(self, rows: list[UsageRecord]) -> None:
        values = [r.values() for r in rows]
        async with self.engine.begin() as conn:
            dialect = conn.dialect.name
            if dialect == "postgresql":
                driver: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg's own connection
                await driver.copy_records_to_table("usage_ledger", records=values, columns=COLUMNS)
            elif dialect == "sqlite":  # multi-row statements: one step (one GIL hand-off) per 500 rows, not per row
                for at in range(0, len(values), _SQLITE_ROWS):
                    chunk = values[at : at + _SQLITE_ROWS]
                    await conn.exec_driver_sql(_sqlite_insert(len(chunk)), tuple(v for row in chunk for v in row))
            else:
                await conn.execute(text(_INSERT), [dict(zip(COLUMNS, v, strict=True)) for v in values])

    async def _one_by_one(self, rows: list[UsageRecord]) -> int:
        """A batch the database refused as such: each row on its own, dropping only those it refuses."""
        written = 0
        for row in rows:
            try:
                await self._write([row])
            except _REFUSED as exc:
                log.error("usage ledger row dropped: the database refuses it (%s)", type(exc).__name__,
                          extra={"fields": {"request_id": row.request_id}})  # fmt: skip
                continue
            except Exception as exc:  # the database went away meanwhile: the rest waits for the next try
                log.error("usage ledger write failed (%s); rows kept for the next try", type(exc).__name__)
                self._pending[:0] = rows[rows.index(row) :]
                return written
            written += 1
        return written

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.flush_seconds)
            self._full.clear()
            await self.flush()

    async def aclose(self) -> None:
        """Stop the background writer and write what is left."""
        if self._task is not None:
            self._stopping = True
            self._full.set()  # the writer finishes the write under way (never cut off mid-batch), then ends
            await self._task
            self._task = None
        await self.flush()


GroupBy = Literal["key", "model", "day", "deployment", "endpoint"]
GROUPS: tuple[GroupBy, ...] = ("key", "model", "day", "deployment", "endpoint")
_COLUMN: dict[str, str] = {"key": "key_id", "model": "model", "day": "day", "deployment": "deployment",
                           "endpoint": "endpoint"}  # fmt: skip
_SUMS = (
    "COUNT(*) AS requests, COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, "
    "COALESCE(SUM(completion_tokens), 0) AS completion_tokens, COALESCE(SUM(cached_tokens), 0) AS cached_tokens, "
    "COALESCE(SUM(cost), 0) AS cost, COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS errors, "
    "COALESCE(SUM(CASE WHEN cache_hit THEN 1 ELSE 0 END), 0) AS cache_hits"
)


async def usage_report(
    engine: AsyncEngine,
    group_by: list[GroupBy],
    *,
    start: str | None = None,
    end: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """Requests, tokens, cost and errors per (``group_by``) between two UTC days (inclusive), with totals."""
    where: list[str] = ["1 = 1"]
    params: dict[str, Any] = {}
    for column, op, value in (("day", ">=", start), ("day", "<=", end), ("key_id", "=", key_id),
                              ("model", "=", model), ("endpoint", "=", endpoint)):  # fmt: skip
        if value is not None:
            name = f"p{len(params)}"
            where.append(f"{column} {op} :{name}")
            params[name] = value
    columns = [_COLUMN[g] for g in group_by]
    condition = " AND ".join(where)
    async with engine.connect() as conn:
        data = []
        if columns:
            listed = ", ".join(columns)
            query = f"SELECT {listed}, {_SUMS} FROM usage_ledger WHERE {condition} GROUP BY {listed} ORDER BY {listed}"
            data = [_row(r._mapping, columns) for r in await conn.execute(text(query), params)]
        total = (await conn.execute(text(f"SELECT {_SUMS} FROM usage_ledger WHERE {condition}"), params)).one()
    return {"object": "usage", "group_by": list(group_by), "start": start, "end": end, "data": data,
            "totals": _row(total._mapping, [])}  # fmt: skip


def _row(row: Any, columns: list[str]) -> dict[str, Any]:
    out = {c: row[c] for c in columns}
    for name in ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "errors", "cache_hits"):
        out[name] = int(row[name])
    out["cost_micro_usd"] = int(row["cost"])
    out["cost_usd"] = usd(int(row["cost"]))
    return out
