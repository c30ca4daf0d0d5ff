"""Budget leases: a replica's slice of one key's budget for one period, held in the shared database and
spent in memory.

A lease is a row of ``budget_leases`` whose ``amount`` is counted in ``budget_spend.reserved``: the
money is held for this replica, so requests reserve and settle against it with plain arithmetic. The
database holds two invariants, each kept by writing both tables in one transaction:
``budget_spend.reserved`` = money reserved by requests outside leases + the sum of the period's lease
amounts, and ``spent + reserved <= budget`` whenever money is granted. Every transaction here writes
before it reads (SQLite takes its write lock at the first statement). Writing spend, returning and
reclaiming lock the lease row, then the spend row; taking locks the spend row, then inserts a new lease
row or updates its own, which only its holder touches (one transaction per key at a time) until it
expires, and the holder stops using it a margin before that: no two transactions wait on each other in
a cycle (were clocks further apart than the margin, PostgreSQL would abort one, to be tried again).

Lease sizing (:func:`lease_size`): a request that does not fit its replica's lease asks for what it
lacks (``need``); the lease grows by ``max(need, min(want, free // 4))`` where ``want`` is the larger of
8 such worst cases and a tenth of the budget, and ``free`` what no one holds: most requests never touch
the database, and near the end of a budget a replica takes at most a quarter of what is left, and only
what the request needs once that quarter is too small, so replicas never starve each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chatgate.gateway.store import autocommit

LEASE_WORST_CASES = 8
"""A lease covers this many worst cases of the request that takes it (budget permitting)."""
LEASE_BUDGET_SHARE = 10
"""... or a tenth of the budget, whichever is larger ..."""
FREE_SHARE = 4
"""... but never more than a quarter of the money no one holds (and never less than the request needs)."""


def lease_size(need: int, budget: int, committed: int) -> int | None:
    """Micro-USD to add to a lease for a request lacking ``need``, where ``committed`` (spent + reserved +
    this replica's unwritten overage) of ``budget`` is taken; None when the budget cannot cover ``need``."""
    free = budget - committed
    if need > free:
        return None
    if need == 0:  # the lease covers it; the database only confirmed the lease (and that the budget holds)
        return 0
    want = max(need * LEASE_WORST_CASES, budget // LEASE_BUDGET_SHARE)
    return max(need, min(want, free // FREE_SHARE))


@dataclass(eq=False)
class Lease:
    """This replica's view of one lease. ``amount`` is what the database holds for it; of that, ``held``
    is reserved by requests in flight and ``used`` was settled but not yet written; ``over`` is settled
    cost beyond everything the lease had (a worst case that was wrong), charged only where the budget is
    free when it is written."""

    id: str
    key_id: str
    period_start: int
    budget: int
    amount: int
    expiry: float
    """Its ``expires_at`` on this replica's monotonic clock; it is not used past ``expiry - margin``
    until the database confirms it again."""
    last_used: float
    held: int = 0
    used: int = 0
    over: int = 0
    lost: bool = False
    """Its row is gone (reclaimed by another replica): nothing more is served from it."""

    @property
    def slack(self) -> int:
        return self.amount - self.used - self.held

    @property
    def pending(self) -> bool:
        return self.used > 0 or self.over > 0

    def fits(self, amount: int, budget: int, until: float) -> bool:
        """Whether a request of ``amount`` under ``budget`` may be held in it, if it is still ours ``until``."""
        return not self.lost and budget == self.budget and until < self.expiry and amount <= self.slack

    def hold(self, amount: int, now: float) -> None:
        self.held += amount
        self.last_used = now

    def charge(self, reserved: int, cost: int, now: float) -> None:
        """Settle a reservation of ``reserved`` that cost ``cost``: its own money first, then the lease's
        slack, the rest as overage."""
        self.held -= reserved
        own = min(cost, reserved)
        self.used += own
        spare = min(cost - own, max(self.slack, 0)) if not self.lost else 0
        self.used += spare
        self.over += cost - own - spare
        self.last_used = now

    def absorb_over(self) -> None:
        """Move overage into slack that requests have since given back (before writing)."""
        if self.over and not self.lost:
            take = min(self.over, max(self.slack, 0))
            self.used += take
            self.over -= take


def _b(name: str) -> str:
    return f"CAST(:{name} AS BIGINT)"


_KEY = "key_id = :k AND period_start = :p"
# A no-op upsert: creates the period's row if needed, locks it (PostgreSQL: the row; SQLite: the
# database's write lock) and reads it, in one statement.
_LOCK_ROW = text(
    "INSERT INTO budget_spend (key_id, period_start, spent, reserved) "
    f"VALUES (CAST(:k AS VARCHAR(40)), {_b('p')}, 0, 0) "
    "ON CONFLICT (key_id, period_start) DO UPDATE SET reserved = budget_spend.reserved RETURNING spent, reserved"
)
_ADD_RESERVED = text(f"UPDATE budget_spend SET reserved = reserved + {_b('amount')} WHERE {_KEY}")
_RELEASE = text(f"UPDATE budget_spend SET reserved = reserved - {_b('amount')} WHERE {_KEY}")
# Moves ``used`` from reserved to spent and releases ``release`` (>= used); ``over`` is charged only up to
# what the budget leaves free once this is done (right-hand sides read the row as it was).
_FREE = f"({_b('budget')} - spent - reserved + {_b('release')} - {_b('used')})"
_WRITE_SPEND = text(
    f"UPDATE budget_spend SET reserved = reserved - {_b('release')}, spent = spent + {_b('used')} + CASE "
    f"WHEN {_b('over')} <= {_FREE} THEN {_b('over')} WHEN {_FREE} > 0 THEN {_FREE} ELSE 0 END WHERE {_KEY}"
)
_NEW_LEASE = text(
    "INSERT INTO budget_leases (id, key_id, period_start, amount, holder, expires_at) "
    f"VALUES (:id, :k, {_b('p')}, {_b('amount')}, :holder, {_b('expires')})"
)
_GROW_LEASE = text(
    f"UPDATE budget_leases SET amount = amount + {_b('amount')}, expires_at = {_b('expires')} WHERE id = :id"
)
_CHARGE_LEASE = text(f"UPDATE budget_leases SET amount = amount - {_b('used')} WHERE id = :id")
_DROP_LEASE = text("DELETE FROM budget_leases WHERE id = :id RETURNING amount")
_RENEW = text(f"UPDATE budget_leases SET expires_at = {_b('expires')} WHERE holder = :holder RETURNING id")
_EXPIRED = text(f"SELECT id FROM budget_leases WHERE expires_at < {_b('now')} AND holder <> :holder")
_RECLAIM = text(
    f"DELETE FROM budget_leases WHERE id = :id AND expires_at < {_b('now')} "
    "RETURNING key_id, period_start, amount, holder"
)
_READ = text(f"SELECT spent, reserved FROM budget_spend WHERE {_KEY}")


class Row(NamedTuple):
    spent: int
    reserved: int


class Taken(NamedTuple):
    granted: int | None
    """Micro-USD added to the lease; None: the budget cannot cover the request."""
    row: Row
    """``budget_spend`` as it was before."""


class Reclaimed(NamedTuple):
    key_id: str
    period_start: int
    amount: int
    holder: str


class LeaseGone(Exception):
    """The lease's row no longer exists: another replica reclaimed it."""


class LeaseTable:
    """The SQL of leases, for one replica (``holder``)."""

    def __init__(self, engine: AsyncEngine, holder: str) -> None:
        self.engine = engine
        self.holder = holder
        self._single = autocommit(engine)

    async def take(self, lease: Lease | None, slot: tuple[str, int], *, new_id: str, need: int, budget: int,
                   expires: int) -> Taken:  # fmt: skip
        """Grow ``lease`` (or create lease ``new_id``) by :func:`lease_size`, renewing it to ``expires``;
        raises :class:`LeaseGone` (nothing written) when ``lease``'s row is gone."""
        params = {"k": slot[0], "p": slot[1]}
        async with self.engine.begin() as conn:
            found = (await conn.execute(_LOCK_ROW, params)).one()
            row = Row(int(found.spent), int(found.reserved))
            pending = lease.over if lease is not None else 0
            granted = lease_size(need, budget, row.spent + row.reserved + pending)
            if granted is None:
                return Taken(None, row)
            if lease is None:
                await conn.execute(_NEW_LEASE, {**params, "id": new_id, "amount": granted, "holder": self.holder,
                                                "expires": expires})  # fmt: skip
            else:
                grown = await conn.execute(_GROW_LEASE, {"id": lease.id, "amount": granted, "expires": expires})
                if grown.rowcount != 1:
                    raise LeaseGone(lease.id)  # the transaction rolls back
            await conn.execute(_ADD_RESERVED, {**params, "amount": granted})
        return Taken(granted, row)

    async def write(self, lease: Lease, used: int, over: int) -> bool:
        """Charge ``used`` (from the lease) and ``over`` (beyond it, where the budget is free); False when
        the lease is gone (then all of it is charged as overage)."""
        async with self.engine.begin() as conn:
            kept = (await conn.execute(_CHARGE_LEASE, {"id": lease.id, "used": used})).rowcount == 1
            await self._write_spend(conn, lease, used=used, over=over, release=used if kept else 0, kept=kept)
        return kept

    async def give_back(self, lease: Lease, used: int, over: int) -> bool:
        """Write what the lease spent and return the rest to the budget, deleting its row; False when the
        row was already gone."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(_DROP_LEASE, {"id": lease.id})).first()
            kept = row is not None
            release = int(row.amount) if row is not None else 0
            await self._write_spend(conn, lease, used=used, over=over, release=release, kept=kept)
        return kept

    @staticmethod
    async def _write_spend(conn: AsyncConnection, lease: Lease, *, used: int, over: int, release: int,
                           kept: bool) -> None:  # fmt: skip
        if not kept:  # its money was already released by the reclaim: charge only what is free
            used, over, release = 0, used + over, 0
        if used or over or release:
            await conn.execute(_WRITE_SPEND, {"k": lease.key_id, "p": lease.period_start, "used": used, "over": over,
                                              "release": release, "budget": lease.budget})  # fmt: skip

    async def renew(self, expires: int) -> set[str]:
        """Push the expiry of every lease of this replica to ``expires``; the ids that still exist."""
        async with self._single.connect() as conn:
            rows = await conn.execute(_RENEW, {"expires": expires, "holder": self.holder})
            return {str(r.id) for r in rows}

    async def reclaim(self, now: int) -> list[Reclaimed]:
        """Return to their budgets the leases of other replicas that expired before ``now`` (each deleted
        and released in one transaction, so two replicas sweeping at once cannot both release it)."""
        async with self._single.connect() as conn:
            ids = [str(r.id) for r in await conn.execute(_EXPIRED, {"now": now, "holder": self.holder})]
        done = []
        for lease_id in ids:
            async with self.engine.begin() as conn:
                row = (await conn.execute(_RECLAIM, {"id": lease_id, "now": now})).first()
                if row is None:
                    continue  # renewed, returned or reclaimed meanwhile
                gone = Reclaimed(str(row.key_id), int(row.period_start), int(row.amount), str(row.holder))
                await conn.execute(_RELEASE, {"k": gone.key_id, "p": gone.period_start, "amount": gone.amount})
            done.append(gone)
        return done

    async def read(self, key_id: str, start: int) -> Row:
        async with self.engine.connect() as conn:
            row = (await conn.execute(_READ, {"k": key_id, "p": start})).first()
        return Row(int(row.spent), int(row.reserved)) if row is not None else Row(0, 0)
