"""Per-key budgets, exact across replicas, at memory speed: budget leases.

A replica serves a key's requests from a *lease* (:mod:`chatgate.gateway.leases`): a slice of the key's
budget for one period that the shared database holds for it (counted in ``budget_spend.reserved``, as a
row of ``budget_leases``). :meth:`BudgetStore.reserve` holds a request's worst case in the lease and
:meth:`BudgetStore.settle` charges its real cost, both in memory: no database on the request path, unless
a request does not fit its lease. Then (one request per key at a time, the others wait for its answer)
the lease grows in one transaction, only while ``spent + reserved + more <= budget`` (so concurrent
replicas cannot pass on the same money), or the request gets 429 ``insufficient_quota``.

A background task (:meth:`BudgetStore.start`), every ``flush_seconds``: renews the expiry of this
replica's leases to ``lease_seconds`` from now (one UPDATE), writes what each lease spent (one
transaction per key touched: ``spent += used, reserved -= used``, the lease's amount ``-= used``),
returns leases idle for ``idle_seconds`` (``reserved -= unused``, row deleted), and reclaims the leases
of other replicas that expired (killed ones). A lease is used only until its expiry minus a fifth of the
lease time (for clocks that disagree) unless renewed; one found gone is dropped. Settlement never takes
spend past the budget: a request may always use its own reservation, beyond it the lease's slack, and
beyond that only what the budget leaves free when it is written. Spend is kept per budget period (UTC
day, ISO week or month; one open-ended period without a reset): a lease belongs to one period.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from chatgate.errors import InsufficientQuotaError
from chatgate.exchange import Period
from chatgate.gateway.leases import Lease, LeaseGone, LeaseTable, Row
from chatgate.pricing import usd

log = logging.getLogger("chatgate.budget")
Slot = tuple[str, int]
"""(key id, period start): what a lease is for."""


def period_bounds(period: Period | None, now: float) -> tuple[int, int | None]:
    """(start, end) in Unix seconds of the budget period holding ``now``; no period: (0, None)."""
    if period is None:
        return 0, None
    return _day_bounds(period, int(now // 86400))


@functools.lru_cache(maxsize=64)  # every request of a day asks for the same bounds: a pure function, memoised
def _day_bounds(period: Period, day_number: int) -> tuple[int, int]:
    """(start, end) of the ``period`` holding UTC day ``day_number`` (days since the epoch)."""
    day = dt.datetime.fromtimestamp(day_number * 86400, dt.UTC)
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
    lease: Lease | None = field(default=None, repr=False, compare=False)
    """The lease it is held in (settled against it, in memory)."""


@dataclass(frozen=True)
class Spend:
    spent: int
    reserved: int
    period_start: int
    resets_at: int | None


class BudgetStore:
    """Budgets of every key, for this replica (``holder``, unique per process)."""

    def __init__(self, engine: AsyncEngine, *, lease_seconds: float = 15.0, flush_seconds: float = 1.0,
                 idle_seconds: float = 5.0, holder: str | None = None) -> None:  # fmt: skip
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.flush_seconds = flush_seconds
        self.idle_seconds = idle_seconds
        self.margin = lease_seconds / 5
        """A lease is not used later than this before its expiry: room for replicas' clocks to disagree."""
        self.holder = holder or f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(8)}"
        self._table = LeaseTable(engine, self.holder)
        self._leases: dict[Slot, Lease] = {}
        self._orphans: list[Lease] = []
        """Leases found gone while requests still held or owed money on them."""
        self._locks: dict[Slot, _SlotLock] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the background task (renew, write, return, reclaim every ``flush_seconds``)."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def reserve(self, key_id: str, budget: int, period: Period | None, amount: int, now: float) -> Reservation:
        """Hold ``amount`` micro-USD of ``key_id``'s budget; 429 ``insufficient_quota`` when it does not fit."""
        start, _ = period_bounds(period, now)
        slot = (key_id, start)
        lease = self._leases.get(slot)
        if lease is not None and lease.fits(amount, budget, time.monotonic() + self.margin):
            lease.hold(amount, time.monotonic())
            return Reservation(key_id, start, amount, budget, lease=lease)
        # A request that goes away must not cut a lease's transaction short (a lease written but not
        # known here would be renewed and held for as long as this replica runs): it finishes on its own.
        growing = asyncio.ensure_future(self._grow_and_hold(slot, budget, period, amount))
        try:
            lease = await asyncio.shield(growing)
        except asyncio.CancelledError:
            growing.add_done_callback(lambda done: _unhold(done, amount))
            raise
        return Reservation(key_id, start, amount, budget, lease=lease)

    async def settle(self, reservation: Reservation, cost: int) -> None:
        """Release the reservation and charge ``cost`` (once), in memory; beyond the reservation, only what
        the lease has spare or, when written, the budget leaves free, so that spend stays within the budget."""
        if reservation.settled:
            return
        reservation.settled = True
        if reservation.lease is not None:
            reservation.lease.charge(reservation.amount, cost, time.monotonic())

    async def spend(self, key_id: str, period: Period | None, now: float) -> Spend:
        """The period's spend as this replica sees it: ``spent`` = written + settled here and not yet written;
        ``reserved`` = held by requests in flight here + every lease of other replicas (in flight or not)."""
        start, end = period_bounds(period, now)
        async with self._locked((key_id, start)):
            spent, reserved = self._view((key_id, start), await self._table.read(key_id, start))
        return Spend(spent, reserved, start, end)

    async def aclose(self) -> None:
        """Stop the background task, write what was spent and return every lease."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
            self._task = None
        for slot, lease in list(self._leases.items()):
            try:
                async with self._locked(slot):
                    if self._leases.get(slot) is lease:
                        await self._give_back(slot, lease)
            except Exception:
                log.exception("budget: returning a lease at shutdown failed; it expires by itself")
        try:
            await self._write_orphans()
        except Exception:
            log.exception("budget: writing the spend of reclaimed leases at shutdown failed")

    async def tick(self) -> None:
        """One round of the background task: renew, write, return idle leases, reclaim expired ones."""
        for step in (self._renew, self._write_all, self._write_orphans, self._reclaim):
            try:
                await step()
            except Exception:
                log.exception("budget: %s failed; tried again in %.1f s", step.__name__.strip("_"), self.flush_seconds)

    # --- the request path when a lease does not cover a request ---------------------------------

    async def _grow_and_hold(self, slot: Slot, budget: int, period: Period | None, amount: int) -> Lease:
        async with self._locked(slot):
            lease = await self._grow(slot, budget, period, amount)
            lease.hold(amount, time.monotonic())
        return lease

    async def _grow(self, slot: Slot, budget: int, period: Period | None, amount: int) -> Lease:
        """The slot's lease, grown (or taken) to fit ``amount``; the caller holds the slot's lock."""
        lease = self._leases.get(slot)
        if lease is not None and lease.fits(amount, budget, time.monotonic() + self.margin):
            return lease  # a request that waited for the lock before this one grew it
        wall, clock = time.time(), time.monotonic()
        expires = int(wall + self.lease_seconds)
        new_id = secrets.token_hex(16)
        try:
            taken = await self._table.take(lease, slot, new_id=new_id, need=_need(lease, amount), budget=budget,
                                           expires=expires)  # fmt: skip
        except LeaseGone:
            assert lease is not None  # only a lease that exists can be gone
            self._lose(lease)
            lease = None
            taken = await self._table.take(None, slot, new_id=new_id, need=amount, budget=budget, expires=expires)
        if taken.granted is None:
            spent, reserved = self._view(slot, taken.row)
            end = period_bounds(period, slot[1])[1]
            raise InsufficientQuotaError(_refusal(budget, period, Spend(spent, reserved, slot[1], end), amount))
        expiry = clock + (expires - wall)
        if lease is None:
            lease = Lease(new_id, slot[0], slot[1], budget, taken.granted, expiry, clock)
            self._leases[slot] = lease
        else:
            lease.amount += taken.granted
            lease.budget = budget
            lease.expiry = expiry
        return lease

    def _view(self, slot: Slot, row: Row) -> tuple[int, int]:
        """(spent, reserved) of ``row`` with this replica's unwritten spend, less its leases' idle money."""
        spent, reserved = row
        mine = [lease for lease in (self._leases.get(slot), *self._orphans)
                if lease is not None and (lease.key_id, lease.period_start) == slot]  # fmt: skip
        owed = 0
        for lease in mine:
            if lease.lost:
                owed += lease.used + lease.over
            else:
                spent += lease.used
                owed += lease.over
                reserved -= lease.amount - lease.held
        if mine and owed:
            spent += min(owed, max(mine[0].budget - row.spent - row.reserved, 0))
        return spent, reserved

    # --- the background task ------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            if not self._stopping:
                await self.tick()

    async def _renew(self) -> None:
        leases = list(self._leases.values())
        if not leases:
            return
        wall, clock = time.time(), time.monotonic()
        expires = int(wall + self.lease_seconds)
        alive = await self._table.renew(expires)
        for lease in leases:
            if lease.id in alive:
                lease.expiry = max(lease.expiry, clock + (expires - wall))
            else:
                self._lose(lease)

    async def _write_all(self) -> None:
        clock = time.monotonic()
        for slot, lease in list(self._leases.items()):
            try:
                async with self._locked(slot):
                    if self._leases.get(slot) is not lease:
                        continue
                    if lease.held == 0 and clock - lease.last_used >= self.idle_seconds:
                        await self._give_back(slot, lease)
                    elif lease.pending:
                        await self._write(lease)
            except Exception:
                log.exception("budget: writing a lease's spend failed; tried again in %.1f s", self.flush_seconds)

    async def _write_orphans(self) -> None:
        for lease in list(self._orphans):
            if lease.pending:
                await self._write(lease)
            if lease.held == 0 and not lease.pending:
                self._orphans.remove(lease)

    async def _write(self, lease: Lease) -> None:
        lease.absorb_over()
        used, over = lease.used, lease.over
        kept = await self._table.write(lease, used, over)
        lease.used -= used
        lease.over -= over
        if kept:
            lease.amount -= used
        else:
            self._lose(lease)

    async def _give_back(self, slot: Slot, lease: Lease) -> None:
        """Write the lease's spend and return the rest; the caller holds the slot's lock."""
        del self._leases[slot]  # requests of this key now wait for the lock, and take a new lease
        lease.absorb_over()
        used, over = lease.used, lease.over
        try:
            await self._table.give_back(lease, used, over)
        except BaseException:
            self._leases[slot] = lease  # still ours: returned on a later round
            raise
        lease.used -= used
        lease.over -= over
        if lease.held or lease.pending:  # only where a request still settled after its reservation was freed
            lease.lost = True
            self._orphans.append(lease)

    async def _reclaim(self) -> None:
        for gone in await self._table.reclaim(int(time.time())):
            log.warning("budget: reclaimed an expired lease of replica %s: $%.6f back to key %s's budget",
                        gone.holder, usd(gone.amount), gone.key_id)  # fmt: skip

    def _lose(self, lease: Lease) -> None:
        """The lease's row is gone (reclaimed): serve nothing more from it, write what it still owes."""
        if lease.lost:
            return
        lease.lost = True
        slot = (lease.key_id, lease.period_start)
        if self._leases.get(slot) is lease:
            del self._leases[slot]
        self._orphans.append(lease)
        log.warning("budget: a lease of key %s was reclaimed by another replica (were the clocks more than "
                    "%.1f s apart?)", lease.key_id, self.margin)  # fmt: skip

    @contextlib.asynccontextmanager
    async def _locked(self, slot: Slot) -> AsyncIterator[None]:
        """The slot's lock: one request of a key takes a lease while the others wait for it."""
        entry = self._locks.get(slot)
        if entry is None:
            entry = self._locks[slot] = _SlotLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[slot]


@dataclass(eq=False)
class _SlotLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    """Coroutines holding or waiting for it: the entry goes when none is left."""


def _unhold(done: asyncio.Future[Lease], amount: int) -> None:
    """Release what a request that was cancelled while its lease grew held (its reservation never returned)."""
    if not done.cancelled() and done.exception() is None:
        done.result().held -= amount


def _need(lease: Lease | None, amount: int) -> int:
    """What a request of ``amount`` lacks in ``lease`` (its whole worst case without one)."""
    return amount if lease is None else max(0, amount - max(lease.slack, 0))


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
