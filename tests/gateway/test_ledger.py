"""The usage ledger: batched writes off the request path, flushed on close, and the spend queries;
then the ledger of a real server, through the admin API and the CLI."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import text

from chatgate.cli import main
from chatgate.gateway.ledger import Ledger, UsageRecord, usage_report
from tests.gateway.conftest import migrated
from tests.gateway.helpers import MASTER, admin_client, create_key, new_key, sdk
from tests.serving import ServerThread

ASK: list[Any] = [{"role": "user", "content": "Hi"}]
DAY = 86_400
T0 = 1_795_000_000  # 2026-11-18 UTC


def row(n: int, *, key: str | None = "key_a", model: str = "m1", when: int = T0, cost: int = 10,
        status: int = 200) -> UsageRecord:  # fmt: skip
    return UsageRecord(request_id=f"req_{n}", created_at=when, key_id=key, model=model, deployment="local/m1",
                       prompt_tokens=5, completion_tokens=3, cached_tokens=1, cost=cost, latency_ms=12, ttft_ms=None,
                       status=status, error_type=None if status < 400 else "invalid_request_error",
                       cache_hit=False)  # fmt: skip


def test_rows_are_written_in_batches_and_the_rest_on_close(db_url: tuple[str, str | None]) -> None:
    async def run() -> tuple[int, int, int]:
        engine = await migrated(db_url)
        try:
            ledger = Ledger(engine, flush_seconds=3600, batch=3)
            ledger.start()
            for n in range(2):
                ledger.record(row(n))
            await asyncio.sleep(0.05)
            async with engine.connect() as conn:
                before = (await conn.execute(text("SELECT COUNT(*) FROM usage_ledger"))).scalar_one()
            ledger.record(row(2))  # the batch is full: the writer wakes
            for _ in range(3000):  # waits for the writer; a guard against hanging, not a speed bound
                await asyncio.sleep(0.02)
                async with engine.connect() as conn:
                    full = (await conn.execute(text("SELECT COUNT(*) FROM usage_ledger"))).scalar_one()
                if full == 3:
                    break
            ledger.record(row(3))
            await ledger.aclose()
            async with engine.connect() as conn:
                after = (await conn.execute(text("SELECT COUNT(*) FROM usage_ledger"))).scalar_one()
            return before, full, after
        finally:
            await engine.dispose()

    assert asyncio.run(run()) == (0, 3, 4)


def test_a_stop_while_a_batch_is_being_written_loses_no_row(db_url: tuple[str, str | None]) -> None:
    """A normal stop used to cancel the writer in the middle of its INSERT, losing that batch."""

    async def run() -> list[int]:
        engine = await migrated(db_url)
        counts = []
        try:
            for attempt in range(5):
                ledger = Ledger(engine, flush_seconds=3600, batch=200)
                ledger.start()
                for n in range(400):  # two full batches: the writer is busy when the stop comes
                    ledger.record(row(attempt * 1000 + n))
                await asyncio.sleep(0)  # let the writer begin its INSERT
                await ledger.aclose()
                async with engine.connect() as conn:
                    counts.append((await conn.execute(text("SELECT COUNT(*) FROM usage_ledger"))).scalar_one())
            return counts
        finally:
            await engine.dispose()

    assert asyncio.run(run()) == [400, 800, 1200, 1600, 2000]


def test_usage_per_key_model_and_day_with_totals(db_url: tuple[str, str | None]) -> None:
    async def run() -> list[dict[str, Any]]:
        engine = await migrated(db_url)
        try:
            ledger = Ledger(engine)
            ledger.record(row(1))
            ledger.record(row(2, model="m2", cost=5))
            ledger.record(row(3, key="key_b", when=T0 + DAY, status=400, cost=0))
            ledger.record(row(4, key=None, when=T0 + DAY))
            await ledger.flush()
            return [
                await usage_report(engine, ["key"]),
                await usage_report(engine, ["model", "day"], start="2026-11-19"),
                await usage_report(engine, [], key_id="key_a"),
            ]
        finally:
            await engine.dispose()

    by_key, by_model_day, one_key = asyncio.run(run())
    assert [(r["key_id"], r["requests"], r["cost_micro_usd"]) for r in by_key["data"]] in (
        [(None, 1, 10), ("key_a", 2, 15), ("key_b", 1, 0)],
        [("key_a", 2, 15), ("key_b", 1, 0), (None, 1, 10)],  # where NULLs sort last (PostgreSQL)
    )
    assert by_key["totals"] | {} == {"requests": 4, "prompt_tokens": 20, "completion_tokens": 12,
                                     "cached_tokens": 4, "errors": 1, "cache_hits": 0, "cost_micro_usd": 25,
                                     "cost_usd": 25e-6}  # fmt: skip
    assert [(r["model"], r["day"], r["requests"]) for r in by_model_day["data"]] == [("m1", "2026-11-19", 2)]
    assert one_key["data"] == [] and one_key["totals"]["requests"] == 2


# --- a real server ----------------------------------------------------------------------------


def test_every_request_leaves_one_ledger_row(admin_server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    with admin_client(admin_server) as admin:
        a = create_key(admin, "a")
        b = create_key(admin, "b")
        client_a = sdk(admin_server, a["key"])
        client_b = sdk(admin_server, b["key"])
        client_a.chat.completions.create(model="gpt-4", messages=ASK, max_tokens=2)
        for _ in client_a.chat.completions.create(model="gpt-4", messages=ASK, max_tokens=2, stream=True):
            pass
        client_b.chat.completions.create(model="gpt-4", messages=ASK, max_tokens=3)
        with pytest.raises(openai.BadRequestError):
            client_b.chat.completions.create(model="gpt-4", messages=ASK, temperature=5)
        usage = admin.get("/admin/usage", params={"group_by": "key"}).json()
        per_key = {r["key_id"]: r for r in usage["data"]}
        assert per_key[a["id"]]["requests"] == 2 and per_key[a["id"]]["completion_tokens"] == 4
        assert per_key[a["id"]]["prompt_tokens"] > 0 and per_key[a["id"]]["errors"] == 0
        assert per_key[b["id"]]["requests"] == 2 and per_key[b["id"]]["errors"] == 1
        assert usage["totals"]["requests"] == 4
        by_model = admin.get("/admin/usage", params={"group_by": "model,day,deployment"}).json()["data"]
        assert {r["model"] for r in by_model} == {"smollm2-135m-instruct", None}  # the 400's body was refused
        assert {r["deployment"] for r in by_model} == {"local/smollm2-135m-instruct", None}
        bad = admin.get("/admin/usage", params={"group_by": "colour"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
        assert admin.get("/admin/usage", params={"start": "yesterday"}).status_code == 400
    assert main(["keys", "--url", admin_server.base_url, "--master-key", MASTER, "usage", "--group-by", "key",
                 "--key-id", a["id"]]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert printed["totals"]["requests"] == 2


def test_usage_is_for_the_master_key_only(admin_server: ServerThread) -> None:
    key = new_key(admin_server, "x")[1]
    with httpx.Client(base_url=admin_server.base_url, headers={"Authorization": f"Bearer {key}"}) as http:
        r = http.get("/admin/usage")
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_permissions"
