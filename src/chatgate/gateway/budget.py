"""Per-key budgets, enforced atomically in the database every replica shares.

A request reserves its worst-case cost before it starts, in one conditional UPDATE that succeeds only
while ``spent + reserved + this`` stays within the budget; it settles afterwards, releasing the
reservation and adding the real cost, in one UPDATE that never takes ``spent + reserved`` past the
budget: a request may always use its own reservation, and beyond it (a worst case that was wrong)
only what no one else holds; the ledger still records its real cost. Two concurrent requests cannot
both pass on the same money: the database serialises the UPDATEs on the row (a row lock in
PostgreSQL, the write lock in SQLite). Spend is kept per budget period (UTC day, ISO week or month;
one open-ended period without a reset), so a new period starts from zero without any job resetting it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chatgate.errors import InsufficientQuotaError
from chatgate.exchange import Period
from chatgate.gateway.store import autocommit
from chatgate.pricing import usd


def period_bounds(period: Period | None, now: float) -> tuple[int, int | None]:
    """(start, end) in Unix seconds of the budget period holding ``now``; no period: (0, None)."""
    if period is None:
        return 0, None
    day = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        start, end = day, day + dt.timedelta(days=1)
    elif period == "weekly":
        start = day - dt.timedelta(days=day.weekday())
        end = start + dt.timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1)
    return int(start.timestamp()), int(end.timestamp())


@dataclass
class Reservation:
    key_id: str
    period_start: int
    amount: int
    budget: int
    """The budget it was granted under: settlement charges beyond ``amount`` only what it leaves free."""
    settled: bool = False


@dataclass(frozen=True)
class Spend:
    spent: int
    reserved: int
    period_start: int
    resets_at: int | None


# One statement, so one round trip: the period's first reservation inserts its row, the others add to
# it; either only while the budget covers it (rowcount 0 otherwise).
_RESERVE = (
    "INSERT INTO budget_spend (key_id, period_start, spent, reserved) "
    "SELECT CAST(:k AS VARCHAR(40)), CAST(:p AS BIGINT), 0, CAST(:amount AS BIGINT) "
    "WHERE CAST(:amount AS BIGINT) <= CAST(:budget AS BIGINT) "
    "ON CONFLICT (key_id, period_start) DO UPDATE SET reserved = budget_spend.reserved + CAST(:amount AS BIGINT) "
    "WHERE budget_spend.spent + budget_spend.reserved + CAST(:amount AS BIGINT) <= CAST(:budget AS BIGINT)"
)
# In an UPDATE every right-hand side reads the row as it was: ``free`` is the budget no one holds.
_FREE = "(CAST(:budget AS BIGINT) - spent - reserved)"
_SETTLE = (
    "UPDATE budget_spend SET reserved = reserved - CAST(:amount AS BIGINT), spent = spent + CASE "
    "WHEN CAST(:cost AS BIGINT) <= CAST(:amount AS BIGINT) THEN CAST(:cost AS BIGINT) "
    f"WHEN {_FREE} <= 0 THEN CAST(:amount AS BIGINT) "
    f"WHEN CAST(:cost AS BIGINT) <= CAST(:amount AS BIGINT) + {_FREE} THEN CAST(:cost AS BIGINT) "
    f"ELSE CAST(:amount AS BIGINT) + {_FREE} END "
    "WHERE key_id = :k AND period_start = :p"
)


_RESERVE_SQL = text(_RESERVE)
_SETTLE_SQL = text(_SETTLE)


class BudgetStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._single = autocommit(engine)  # every write here is one atomic statement

    def start(self) -> None:
        """Nothing runs in the background yet."""

    async def aclose(self) -> None:
        """Nothing is held in memory yet."""

    async def reserve(self, key_id: str, budget: int, period: Period | None, amount: int, now: float) -> Reservation:
        """Hold ``amount`` micro-USD of ``key_id``'s budget; 429 ``insufficient_quota`` when it does not fit."""
        start, _ = period_bounds(period, now)
        params = {"k": key_id, "p": start, "amount": amount, "budget": budget}
        async with self._single.connect() as conn:
            granted = (await conn.execute(_RESERVE_SQL, params)).rowcount == 1
        if not granted:
            spend = await self.spend(key_id, period, now)
            raise InsufficientQuotaError(_refusal(budget, period, spend, amount))
        return Reservation(key_id, start, amount, budget)

    async def settle(self, reservation: Reservation, cost: int) -> None:
        """Release the reservation and charge ``cost`` to the period it was made in (once); never more than
        the reservation plus what the budget leaves free, so that spend stays within the budget."""
        if reservation.settled:
            return
        reservation.settled = True
        async with self._single.connect() as conn:
            await conn.execute(_SETTLE_SQL, {"k": reservation.key_id, "p": reservation.period_start,
                                               "amount": reservation.amount, "cost": cost,
                                               "budget": reservation.budget})  # fmt: skip

    async def spend(self, key_id: str, period: Period | None, now: float) -> Spend:
        start, end = period_bounds(period, now)
        async with self.engine.connect() as conn:
            row = (await conn.execute(text("SELECT spent, reserved FROM budget_spend WHERE key_id = :k AND "
                                           "period_start = :p"), {"k": key_id, "p": start})).first()  # fmt: skip
        return Spend(int(row.spent) if row else 0, int(row.reserved) if row else 0, start, end)


def _refusal(budget: int, period: Period | None, spend: Spend, amount: int) -> str:
    when = f" this {period[:-2] if period != 'daily' else 'day'}" if period else ""
    reset = (
        f" It resets at {dt.datetime.fromtimestamp(spend.resets_at, dt.UTC):%Y-%m-%d %H:%M} UTC."
        if spend.resets_at
        else ""
    )
    return (
        f"Budget exceeded for this API key: ${usd(spend.spent):.6f} spent and ${usd(spend.reserved):.6f} reserved"
        f"{when} of a ${usd(budget):.6f} budget; this request may cost up to ${usd(amount):.6f}.{reset}"
    )
