"""Budget leases on real SQLite and PostgreSQL: two BudgetStores on one database are two replicas.
Exactness under concurrency, in-memory reserve and settle, writing, idle return, reclaim of a killed
replica's lease (by one sweeper only), a renewal that finds its lease gone, shutdown, periods, sizing."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Coroutine
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from chatgate.errors import InsufficientQuotaError
from chatgate.gateway.budget import BudgetStore, Reservation
from chatgate.gateway.leases import lease_size
from tests.gateway.conftest import migrated

Db = tuple[str, str | None]
NOW = dt.datetime(2026, 11, 18, 12, tzinfo=dt.UTC).timestamp()  # a Wednesday
HANG_GUARD = 600  # polls of 0.05 s: generous for a busy machine, never a speed bound


async def row(engine: AsyncEngine, key: str, start: int = 0) -> tuple[int, int]:
    """(spent, reserved) as written in the database."""
    async with engine.connect() as conn:
        found = (await conn.execute(text("SELECT spent, reserved FROM budget_spend WHERE key_id = :k AND "
                                         "period_start = :p"), {"k": key, "p": start})).first()  # fmt: skip
    return (int(found.spent), int(found.reserved)) if found else (0, 0)


async def leases(engine: AsyncEngine) -> list[tuple[str, int, str]]:
    """(key id, amount, holder) of every lease row."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT key_id, amount, holder FROM budget_leases ORDER BY key_id"))
        return [(str(r.key_id), int(r.amount), str(r.holder)) for r in rows]


def done_at_once(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` one step: it must finish without suspending (no database, no waiting)."""
    with pytest.raises(StopIteration) as finished:
        coro.send(None)
    return finished.value.value


def run_on(db: Db, test: Any) -> None:
    async def main() -> None:
        engine = await migrated(db)
        try:
            await test(engine)
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_lease_sizing_rule() -> None:
    budget = 1_000_000
    assert lease_size(100, budget, 0) == 100_000  # a tenth of the budget: many requests per lease
    assert lease_size(20_000, budget, 0) == 160_000  # or 8 worst cases, when larger
    assert lease_size(20_000, budget, 800_000) == 50_000  # never more than a quarter of what is free
    assert lease_size(30_000, budget, 950_000) == 30_000  # a small free budget: only what the request needs
    assert lease_size(50_001, budget, 950_000) is None  # it does not fit at all
    assert lease_size(0, budget, budget) == 0


def test_reserve_and_settle_inside_a_lease_never_wait(db_url: Db) -> None:
    async def test(engine: AsyncEngine) -> None:
        store = BudgetStore(engine)
        first = await store.reserve("k", 1_000_000, None, 1000, NOW)  # takes the lease: the database
        assert await leases(engine) == [("k", 100_000, store.holder)] and await row(engine, "k") == (0, 100_000)
        second = done_at_once(store.reserve("k", 1_000_000, None, 1000, NOW))
        assert isinstance(second, Reservation)
        done_at_once(store.settle(first, 700))
        done_at_once(store.settle(second, 300))
        assert await row(engine, "k") == (0, 100_000)  # nothing written yet ...
        spend = await store.spend("k", None, NOW)
        assert (spend.spent, spend.reserved) == (1000, 0)  # ... but this replica's spend shows it
        await store.tick()
        assert await row(engine, "k") == (1000, 99_000) and (await leases(engine))[0][1] == 99_000
        await store.aclose()
        assert await row(engine, "k") == (1000, 0) and await leases(engine) == []

    run_on(db_url, test)


def test_only_taking_or_confirming_a_lease_reaches_the_database(db_url: Db) -> None:
    async def test(engine: AsyncEngine) -> None:
        statements: list[str] = []
        event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        store = BudgetStore(engine)
        first = await store.reserve("k", 1_000_000, None, 1000, NOW)
        assert any("budget_leases" in s for s in statements)
        statements.clear()
        for _ in range(50):
            await store.settle(await store.reserve("k", 1_000_000, None, 1000, NOW), 1000)
        await store.settle(first, 5000)
        assert statements == []  # within the lease: memory only
        store.margin = 3600.0  # as if the lease's expiry were near: not used until the database confirms it
        await store.settle(await store.reserve("k", 1_000_000, None, 1000, NOW), 0)
        assert [s.split()[0] for s in statements if "budget_leases" in s] == ["UPDATE"]
        assert await leases(engine) == [("k", 100_000, store.holder)]  # confirmed, not grown
        await store.aclose()
        assert await row(engine, "k") == (55_000, 0)

    run_on(db_url, test)


def test_a_request_cancelled_while_its_lease_is_taken_leaves_nothing_held(db_url: Db) -> None:
    async def test(engine: AsyncEngine) -> None:
        store = BudgetStore(engine)
        request = asyncio.ensure_future(store.reserve("k", 1_000_000, None, 1000, NOW))
        await asyncio.sleep(0)  # it is taking the lease
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        for _ in range(HANG_GUARD):  # the lease's transaction finishes on its own
            if await leases(engine) and (await store.spend("k", None, NOW)).reserved == 0:
                break
            await asyncio.sleep(0.05)
        assert await leases(engine) == [("k", 100_000, store.holder)]  # known to this replica: it serves from it
        assert isinstance(done_at_once(store.reserve("k", 1_000_000, None, 1000, NOW)), Reservation)
        await store.aclose()
        assert await row(engine, "k") == (0, 0) and await leases(engine) == []

    run_on(db_url, test)


def test_two_replicas_with_many_concurrent_requests_never_overspend(db_url: Db) -> None:
    budget = 50_000

    async def test(engine: AsyncEngine) -> None:
        replicas = [BudgetStore(engine, idle_seconds=0.05), BudgetStore(engine, idle_seconds=0.05)]
        charged: list[int] = []
        rng = random.Random(12)

        async def one(i: int) -> None:
            amount = rng.randrange(200, 2000)
            store = replicas[i % 2]
            try:
                held = await store.reserve("shared", budget, "daily", amount, NOW)
            except InsufficientQuotaError:
                return
            await asyncio.sleep(rng.random() / 100)
            cost = rng.randrange(0, amount + 1)
            charged.append(cost)
            await store.settle(held, cost)

        async def ticking() -> None:
            for _ in range(20):
                await asyncio.gather(*(r.tick() for r in replicas))
                await asyncio.sleep(0.01)

        await asyncio.gather(ticking(), *(one(i) for i in range(300)))
        for replica in replicas:
            await replica.aclose()
        start = int(dt.datetime(2026, 11, 18, tzinfo=dt.UTC).timestamp())
        spent, reserved = await row(engine, "shared", start)
        assert reserved == 0 and await leases(engine) == []
        assert spent == sum(charged) <= budget  # every charge written, none twice, within the budget
        assert len(charged) < 300  # the budget refused some

    run_on(db_url, test)


def test_a_request_beyond_the_lease_grows_it_and_the_refusal_says_what_is_held(db_url: Db) -> None:
    async def test(engine: AsyncEngine) -> None:
        a, b = BudgetStore(engine), BudgetStore(engine)
        await a.reserve("k", 1000, None, 100, NOW)  # a leases 250 (a quarter of what is free)
        await b.reserve("k", 1000, None, 500, NOW)  # b needs more than a quarter: it leases only what it needs
        assert sorted(amount for _, amount, _ in await leases(engine)) == [250, 500]
        await a.reserve("k", 1000, None, 240, NOW)  # beyond a's lease by 90: a grows it by 90 (62 is a quarter)
        assert await row(engine, "k") == (0, 840)
        await b.reserve("k", 1000, None, 160, NOW)  # the last of the budget
        assert await row(engine, "k") == (0, 1000)
        with pytest.raises(InsufficientQuotaError) as refused:
            await b.reserve("k", 1000, None, 1, NOW)
        message = refused.value.message  # "reserved": a's lease and b's requests in flight
        assert message.startswith("Budget exceeded for this API key: $0.000000 spent and $0.001000 reserved")
        assert message.endswith("of a $0.001000 budget; this request may cost up to $0.000001.")
        for store in (a, b):
            await store.aclose()
        assert await row(engine, "k") == (0, 0)

    run_on(db_url, test)


def test_idle_leases_go_back_to_the_budget(db_url: Db) -> None:
    async def test(engine: AsyncEngine) -> None:
        store = BudgetStore(engine, idle_seconds=0.05)
        held = await store.reserve("k", 10_000, None, 100, NOW)
        await asyncio.sleep(0.1)
        await store.tick()
        assert await leases(engine) != []  # a request still holds money in it
        await store.settle(held, 40)
        for _ in range(HANG_GUARD):
            await store.tick()
            if not await leases(engine):
                break
            await asyncio.sleep(0.05)
        assert await row(engine, "k") == (40, 0) and await leases(engine) == []
        await store.reserve("k", 10_000, None, 100, NOW)  # the next request takes a new lease
        assert len(await leases(engine)) == 1
        await store.aclose()

    run_on(db_url, test)


def test_a_killed_replicas_lease_is_reclaimed_once_after_it_expires(db_url: Db) -> None:
    async def test(engine: AsyncEngine) -> None:
        killed = BudgetStore(engine, lease_seconds=3)
        sweepers = [BudgetStore(engine), BudgetStore(engine)]
        settled = await killed.reserve("k", 10_000, None, 100, NOW)
        await killed.settle(settled, 100)  # settled in memory, never written: what a kill -9 loses
        await killed.reserve("k", 10_000, None, 100, NOW)  # in flight when it died
        await asyncio.gather(*(s.tick() for s in sweepers))
        assert await row(engine, "k") == (0, 1000)  # not expired yet: still held
        for _ in range(HANG_GUARD):
            await asyncio.gather(*(s.tick() for s in sweepers))  # two replicas sweeping at once
            if not await leases(engine):
                break
            await asyncio.sleep(0.05)
        assert await row(engine, "k") == (0, 0)  # released exactly once, never below zero
        for store in sweepers:
            await store.aclose()

    run_on(db_url, test)


def test_a_replica_whose_lease_was_reclaimed_drops_it_and_stays_within_the_budget(db_url: Db) -> None:
    async def test(engine: AsyncEngine) -> None:
        slow = BudgetStore(engine, lease_seconds=1)  # as if its clock ran far behind
        other = BudgetStore(engine)
        held = await slow.reserve("k", 1000, None, 100, NOW)
        for _ in range(HANG_GUARD):
            await other.tick()
            if not await leases(engine):
                break
            await asyncio.sleep(0.05)
        await other.reserve("k", 1000, None, 1000, NOW)  # the whole budget, now free again
        await slow.settle(held, 100)
        await slow.tick()  # the renewal finds its lease gone: dropped; the spend is written only where free
        assert await row(engine, "k") == (0, 1000)
        with pytest.raises(InsufficientQuotaError):
            await slow.reserve("k", 1000, None, 1, NOW)
        await slow.aclose()
        await other.aclose()
        assert await row(engine, "k") == (0, 0) and await leases(engine) == []

    run_on(db_url, test)


def test_a_lease_belongs_to_one_period(db_url: Db) -> None:
    day = 86_400
    wednesday = int(dt.datetime(2026, 11, 18, tzinfo=dt.UTC).timestamp())

    async def test(engine: AsyncEngine) -> None:
        store = BudgetStore(engine)
        first = await store.reserve("k", 1000, "daily", 600, NOW)
        await store.settle(first, 600)
        with pytest.raises(InsufficientQuotaError, match="resets at 2026-11-19 00:00 UTC"):
            await store.reserve("k", 1000, "daily", 500, NOW)
        second = await store.reserve("k", 1000, "daily", 500, NOW + day)  # Thursday: a new lease
        await store.settle(second, 200)
        assert len(await leases(engine)) == 2
        await store.aclose()
        assert await row(engine, "k", wednesday) == (600, 0)
        assert await row(engine, "k", wednesday + day) == (200, 0)

    run_on(db_url, test)


def test_concurrent_requests_of_one_key_take_one_lease(db_url: Db) -> None:
    async def test(engine: AsyncEngine) -> None:
        store = BudgetStore(engine)
        await asyncio.gather(*(store.reserve("k", 1_000_000, None, 100, NOW) for _ in range(50)))
        assert [amount for _, amount, _ in await leases(engine)] == [100_000]
        assert (await store.spend("k", None, NOW)).reserved == 5000
        await store.aclose()

    run_on(db_url, test)
