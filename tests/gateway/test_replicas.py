"""Two real ``chatgate serve`` replicas sharing PostgreSQL and Redis, a priced model on the fake OpenAI
upstream: 100 concurrent requests against a budget that covers 10 never spend beyond it and leave nothing
reserved; a replica killed with SIGKILL mid-load has its leased money reclaimed by the other once its
lease expires."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import chatgate
from tests.fakes.openai_upstream import Behaviour, FakeOpenAI
from tests.fakes.server import FakeServer
from tests.gateway.conftest import RedisProcess, free_port, fresh_on_postgres
from tests.serving import running
from tests.test_cli import Server

MASTER = "sk-master-replicas-0123456789"
LEASE_SECONDS = 3
MAX_TOKENS = 7
OUTPUT_PRICE = 100  # USD per million tokens: the fake's 7 completion tokens cost 700 micro-USD ...
WORST = MAX_TOKENS * OUTPUT_PRICE  # ... exactly the worst case of a request with max_tokens 7 (prompts are free)
BODY = json.dumps({"model": "priced", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": MAX_TOKENS})
POLLS = 2400  # of 0.05 s: a hang guard, never a speed bound


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(database URL, Redis URL): a fresh PostgreSQL database and a redis-server of this test's own."""
    with fresh_on_postgres("DATABASE") as name, RedisProcess(free_port()) as redis:  # skips without them
        yield f"postgresql://root@127.0.0.1:5432/{name}", redis.url


@pytest.fixture
def upstream() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI(reply="Leased hello.")
    with running(FakeServer(fake.app())) as server:
        yield fake, server.url


@pytest.fixture
def replicas(tmp_path: Path, shared: tuple[str, str], upstream: tuple[FakeOpenAI, str]) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    try:
        for name in ("a", "b"):
            started.append(Replica(tmp_path / name, shared, upstream[1]))
        yield started
    finally:
        for replica in started:
            replica.server.kill()


class Replica:
    """``chatgate serve --config FILE`` in a subprocess, importing the chatgate under test."""

    def __init__(self, home: Path, shared: tuple[str, str], upstream_url: str) -> None:
        home.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "host": "127.0.0.1", "port": self.port, "data_dir": str(home / "data"), "master_key": MASTER,
            "database_url": shared[0], "redis_url": shared[1], "models": [], "aliases": {},
            "providers": {"fakeai": {"base_url": f"{upstream_url}/v1", "api_key": "sk-upstream"}},
            "upstream_models": [{"name": "priced", "deployments": [{
                "provider": "fakeai", "model": "up", "input_price_per_million": 0,
                "output_price_per_million": OUTPUT_PRICE}]}],
            "budget_lease_seconds": LEASE_SECONDS, "budget_flush_seconds": 0.5, "budget_lease_idle_seconds": 1,
        }  # fmt: skip
        (home / "config.yaml").write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATGATE_")}
        source = Path(chatgate.__file__).resolve().parents[1]  # the worktree's src, not the installed copy
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
        self.server = Server(["--config", str(home / "config.yaml")], env, home)
        self.server.wait_healthy(self.port)

    @property
    def pid(self) -> int:
        return self.server.proc.pid


def new_key(replica: Replica, budget_micro_usd: int) -> dict[str, Any]:
    with httpx.Client(base_url=replica.url, headers={"Authorization": f"Bearer {MASTER}"}, timeout=60) as admin:
        created: dict[str, Any] = admin.post("/admin/keys", json={"name": "shared", "max_budget":
                                                                  budget_micro_usd / 1e6}).json()  # fmt: skip
    return created


async def load(targets: list[Replica], key: str, count: int) -> list[httpx.Response | BaseException]:
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(300, pool=None)) as http:
        posts = (http.post(f"{targets[i % len(targets)].url}/v1/chat/completions", content=BODY) for i in range(count))
        return await asyncio.gather(*posts, return_exceptions=True)


async def budget_row(engine: AsyncEngine, key_id: str) -> tuple[int, int]:
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT spent, reserved FROM budget_spend WHERE key_id = :k"),
                                  {"k": key_id})).one()  # fmt: skip
    return int(row.spent), int(row.reserved)


async def lease_rows(engine: AsyncEngine) -> list[tuple[str, int, int]]:
    """(holder, amount, expires_at) of every lease."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT holder, amount, expires_at FROM budget_leases"))
        return [(str(r.holder), int(r.amount), int(r.expires_at)) for r in rows]


async def until_returned(engine: AsyncEngine, key_id: str) -> tuple[int, int]:
    """(spent, reserved) once no lease is left (a hang guard, not a speed bound)."""
    for _ in range(POLLS):
        if not await lease_rows(engine):
            break
        await asyncio.sleep(0.05)
    return await budget_row(engine, key_id)


def held_by(rows: list[tuple[str, int, int]], replica: Replica) -> list[tuple[str, int, int]]:
    return [r for r in rows if r[0].split(":")[1] == str(replica.pid)]


def test_two_replicas_share_a_budget_for_ten_and_a_killed_one_gives_its_lease_back(
    replicas: list[Replica], shared: tuple[str, str], upstream: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = upstream
    key = new_key(replicas[0], 10 * WORST)

    async def hundred() -> tuple[list[httpx.Response], tuple[int, int]]:
        answers = await load(replicas, key["key"], 100)
        engine = create_async_engine(shared[0].replace("postgresql://", "postgresql+asyncpg://"))
        try:
            return [a for a in answers if isinstance(a, httpx.Response)], await until_returned(engine, key["id"])
        finally:
            await engine.dispose()

    answers, (spent, reserved) = asyncio.run(hundred())
    ok = [a for a in answers if a.status_code == 200]
    assert len(answers) == 100 and 1 <= len(ok) <= 10
    assert all(a.status_code == 429 and a.json()["error"]["code"] == "insufficient_quota"
               for a in answers if a.status_code != 200)  # fmt: skip
    assert all(a.json()["usage"]["completion_tokens"] == MAX_TOKENS for a in ok)
    assert spent == WORST * len(ok) <= 10 * WORST and reserved == 0
    with httpx.Client(base_url=replicas[1].url, headers={"Authorization": f"Bearer {MASTER}"}) as admin:
        assert admin.get(f"/admin/keys/{key['id']}").json()["spend"]["reserved"] == 0

    victim, survivor = replicas
    key = new_key(survivor, 100 * WORST)
    fake.then(*[Behaviour(delay=0.5)] * 400)  # requests stay in flight while the victim dies

    async def killed_mid_load() -> tuple[list[tuple[str, int, int]], float, tuple[int, int]]:
        engine = create_async_engine(shared[0].replace("postgresql://", "postgresql+asyncpg://"))
        try:
            running = asyncio.ensure_future(load([victim, survivor], key["key"], 60))
            for _ in range(POLLS):
                if held_by(await lease_rows(engine), victim) and fake.in_flight:
                    break
                await asyncio.sleep(0.05)
            victim.server.kill()  # SIGKILL: nothing written, nothing returned
            killed_at = time.time()
            held = held_by(await lease_rows(engine), victim)
            await running
            return held, killed_at, await until_returned(engine, key["id"])
        finally:
            await engine.dispose()

    held, killed_at, (spent, reserved) = asyncio.run(killed_mid_load())
    assert held and sum(amount for _, amount, _ in held) > 0  # the victim held leased money when it died
    assert max(expires for _, _, expires in held) <= killed_at + LEASE_SECONDS + 1  # reclaimable by then
    assert reserved == 0 and spent <= 100 * WORST  # the money came back; what it settled unwritten is lost
    assert f":{victim.pid}:" in survivor.server.output() and "reclaimed an expired lease" in survivor.server.output()
