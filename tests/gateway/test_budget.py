"""Budgets: atomic reservations in the shared database, settlement, periods; then through a real
server: 50 concurrent requests against a budget for 10, OpenAI's 429 ``insufficient_quota`` that the
SDK does not retry, and budgets kept across a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from chatgate.config import (
    DeploymentConfig,
    PriceConfig,
    PromptOverheadConfig,
    ProviderConfig,
    Settings,
    UpstreamModelConfig,
)
from chatgate.errors import InsufficientQuotaError
from chatgate.gateway.budget import BudgetStore, period_bounds
from tests.conftest import StartServer, make_settings
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import FakeServer
from tests.gateway.conftest import migrated
from tests.gateway.helpers import MASTER, admin_client, create_key, sdk
from tests.serving import ServerThread, all_running, running, serve

ASK: list[Any] = [{"role": "user", "content": "Say hi"}]


def test_a_reservation_holds_money_until_settled(db_url: tuple[str, str | None]) -> None:
    async def run() -> None:
        engine = await migrated(db_url)
        try:
            budgets = BudgetStore(engine)
            first = await budgets.reserve("key_a", 100, None, 60, 0)
            with pytest.raises(InsufficientQuotaError, match="Budget exceeded") as refused:
                await budgets.reserve("key_a", 100, None, 50, 0)
            assert refused.value.status == 429 and refused.value.code == "insufficient_quota"
            assert refused.value.headers() == {"x-should-retry": "false"}
            await budgets.settle(first, 30)
            await budgets.settle(first, 30)  # settling twice charges once
            second = await budgets.reserve("key_a", 100, None, 50, 0)
            spend = await budgets.spend("key_a", None, 0)
            assert (spend.spent, spend.reserved) == (30, 50)
            await budgets.settle(second, 0)
            assert (await budgets.spend("key_a", None, 0)).reserved == 0
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_fifty_concurrent_reservations_against_a_budget_for_ten(db_url: tuple[str, str | None]) -> None:
    async def run() -> tuple[int, int]:
        engine = await migrated(db_url)
        try:
            budgets = BudgetStore(engine)

            async def one() -> bool:
                try:
                    await budgets.reserve("key_c", 1000, "daily", 100, 1_800_000_000)
                except InsufficientQuotaError:
                    return False
                return True

            granted = sum(await asyncio.gather(*(one() for _ in range(50))))
            return granted, (await budgets.spend("key_c", "daily", 1_800_000_000)).reserved
        finally:
            await engine.dispose()

    assert asyncio.run(run()) == (10, 1000)


def test_a_new_period_starts_from_zero(db_url: tuple[str, str | None]) -> None:
    day = 86_400

    async def run() -> None:
        engine = await migrated(db_url)
        try:
            budgets = BudgetStore(engine)
            monday = dt.datetime(2026, 11, 16, 12, tzinfo=dt.UTC).timestamp()
            held = await budgets.reserve("key_p", 100, "daily", 100, monday)
            await budgets.settle(held, 100)
            with pytest.raises(InsufficientQuotaError, match="resets at 2026-11-17 00:00 UTC"):
                await budgets.reserve("key_p", 100, "daily", 1, monday)
            await budgets.reserve("key_p", 100, "daily", 100, monday + day)  # Tuesday: a fresh day
            assert (await budgets.spend("key_p", "daily", monday)).spent == 100
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_periods_are_utc_days_iso_weeks_and_months() -> None:
    sunday = dt.datetime(2026, 11, 22, 15, 30, tzinfo=dt.UTC).timestamp()

    def days(period: Any, when: float) -> tuple[str, str | None]:
        start, end = period_bounds(period, when)
        fmt = "%Y-%m-%d"
        return (dt.datetime.fromtimestamp(start, dt.UTC).strftime(fmt),
                None if end is None else dt.datetime.fromtimestamp(end, dt.UTC).strftime(fmt))  # fmt: skip

    assert days("daily", sunday) == ("2026-11-22", "2026-11-23")
    assert days("weekly", sunday) == ("2026-11-16", "2026-11-23")
    assert days("monthly", sunday) == ("2026-11-01", "2026-12-01")
    assert days("monthly", dt.datetime(2026, 12, 31, tzinfo=dt.UTC).timestamp()) == ("2026-12-01", "2027-01-01")
    assert period_bounds(None, sunday) == (0, None)


# --- through a real server --------------------------------------------------------------------


def priced(data_dir: Path, database_url: str | None) -> Settings:
    """The default model at $1 per million tokens each way: a token costs one micro-USD."""
    settings = make_settings(master_key=MASTER, data_dir=str(data_dir), database_url=database_url)
    models = [m.model_copy(update={"input_price_per_million": 1.0, "output_price_per_million": 1.0})
              for m in settings.models]  # fmt: skip
    return settings.model_copy(update={"models": models})


@pytest.fixture
def budgeted(tmp_path: Path, server_database: str | None) -> Iterator[ServerThread]:
    with serve(priced(tmp_path, server_database)) as server:
        yield server


def worst_case(server: ServerThread, admin: httpx.Client, body: bytes) -> int:
    """Micro-USD the server reserves for ``body``, as its refusal on a one-micro-dollar budget says."""
    key = create_key(admin, "probe", max_budget=0.000001)["key"]
    refused = httpx.post(f"{server.base_url}/v1/chat/completions", content=body,
                         headers={"Authorization": f"Bearer {key}", "content-type": "application/json"})  # fmt: skip
    found = re.search(r"may cost up to \$(\d+\.\d+)", refused.json()["error"]["message"])
    assert refused.status_code == 429 and found is not None
    return round(float(found.group(1)) * 1e6)


def test_fifty_concurrent_requests_never_overspend_a_budget_for_ten(budgeted: ServerThread) -> None:
    body = json.dumps({"model": "gpt-4", "messages": ASK, "max_tokens": 4, "temperature": 0}).encode()
    with admin_client(budgeted) as admin:
        worst = worst_case(budgeted, admin, body)  # the rendered prompt's bytes bound its tokens, plus max_tokens
        key = create_key(admin, "ten", max_budget=10 * worst / 1e6)

        async def fire() -> list[httpx.Response]:
            headers = {"Authorization": f"Bearer {key['key']}", "content-type": "application/json"}
            async with httpx.AsyncClient(base_url=budgeted.base_url, headers=headers, timeout=300) as http:
                return await asyncio.gather(*(http.post("/v1/chat/completions", content=body) for _ in range(50)))

        responses = asyncio.run(fire())
        ok = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        for r in refused:
            assert r.status_code == 429 and r.headers["x-should-retry"] == "false"
            error = r.json()["error"]
            assert error["type"] == error["code"] == "insufficient_quota" and "budget" in error["message"].lower()
        assert len(ok) >= 10 and refused  # at least ten fit; fifty do not
        spend = admin.get(f"/admin/keys/{key['id']}").json()["spend"]
        cost = ok[0].json()["usage"]["total_tokens"]  # micro-USD at $1 per million tokens
        assert spend["reserved"] == 0
        assert round(spend["spent"] * 1e6) == cost * len(ok) <= 10 * worst  # never over the budget
        usage = admin.get("/admin/usage", params={"group_by": "key", "key_id": key["id"]}).json()
        assert usage["totals"]["cost_micro_usd"] == cost * len(ok)
        assert usage["totals"]["requests"] == 50 and usage["totals"]["errors"] == len(refused)


def test_the_sdk_sees_a_budget_error_and_does_not_retry_it(budgeted: ServerThread) -> None:
    with admin_client(budgeted) as admin:
        key = create_key(admin, "broke", max_budget=0)
        client = sdk(budgeted, key["key"], max_retries=3)
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="gpt-4", messages=ASK, max_tokens=2)
        assert err.value.code == "insufficient_quota" and "budget" in err.value.message.lower()
        assert key["key"] not in err.value.message
        usage = admin.get("/admin/usage", params={"group_by": "", "key_id": key["id"]}).json()
    assert usage["totals"]["requests"] == 1  # x-should-retry: false, so the SDK sent it once


def test_a_free_model_never_touches_a_budget(tmp_path: Path, start_server: StartServer) -> None:
    server = start_server(master_key=MASTER, data_dir=str(tmp_path))
    with admin_client(server) as admin:
        key = create_key(admin, "free", max_budget=0.000001)
        client = sdk(server, key["key"])
        for _ in range(3):
            client.chat.completions.create(model="gpt-4", messages=ASK, max_tokens=2)
        assert admin.get(f"/admin/keys/{key['id']}").json()["spend"]["spent"] == 0


def test_a_restart_keeps_keys_budgets_and_the_ledger(tmp_path: Path, server_database: str | None) -> None:
    settings = priced(tmp_path, server_database)
    with serve(settings) as first:  # leaving the block is a normal stop: the ledger's last batch is written
        with admin_client(first) as admin:
            key = create_key(admin, "kept", max_budget=1.0, budget_period="monthly")
        client = sdk(first, key["key"])
        for _ in range(3):
            client.chat.completions.create(model="gpt-4", messages=ASK, max_tokens=2)
    with serve(settings) as second:
        with admin_client(second) as admin:
            kept = admin.get(f"/admin/keys/{key['id']}").json()
            usage = admin.get("/admin/usage", params={"group_by": "key", "key_id": key["id"]}).json()
        assert kept["max_budget"] == 1.0 and kept["budget_period"] == "monthly"
        assert kept["spend"]["spent"] > 0 and kept["spend"]["reserved"] == 0
        assert usage["totals"]["requests"] == 3
        assert usage["totals"]["cost_usd"] == pytest.approx(kept["spend"]["spent"])
        client = sdk(second, key["key"])
        assert client.chat.completions.create(model="gpt-4", messages=ASK, max_tokens=2).choices


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI(reply="Priced hello.")
    with running(FakeServer(fake.app())) as server:
        yield fake, server.url


def test_upstream_costs_use_the_answering_deployments_price_and_cap_unbounded_requests(
    tmp_path: Path, upstream: tuple[FakeOpenAI, str], start_server: StartServer
) -> None:
    fake, url = upstream
    settings = make_settings(master_key=MASTER, data_dir=str(tmp_path), reserve_max_tokens=500,
                             providers={"fakeai": ProviderConfig(base_url=f"{url}/v1", api_key="sk-up")},
                             pricing={"fakeai/direct": PriceConfig(input_price_per_million=2,
                                                                   output_price_per_million=2)},
                             upstream_models=[UpstreamModelConfig(name="priced", deployments=[DeploymentConfig(
                                 provider="fakeai", model="up", input_price_per_million=1,
                                 output_price_per_million=3)])])  # fmt: skip
    server = start_server(settings)
    with admin_client(server) as admin:
        key = create_key(admin, "up", max_budget=0.01)
        client = sdk(server, key["key"])
        fake.requests.clear()
        client.chat.completions.create(model="priced", messages=ASK)
        client.chat.completions.create(model="priced", messages=ASK, max_tokens=20)
        assert [r.get("max_completion_tokens") for r in fake.requests] == [500, None]  # capped when unbounded
        assert fake.requests[1]["max_tokens"] == 20
        for _ in client.chat.completions.create(model="fakeai/direct", messages=ASK, stream=True):
            pass
        spend = admin.get(f"/admin/keys/{key['id']}").json()["spend"]
        rows = admin.get("/admin/usage", params={"group_by": "deployment", "key_id": key["id"]}).json()["data"]
    # the fake reports 11 prompt and 7 completion tokens: 11 x 1 + 7 x 3 = 32 micro-USD per call to
    # "priced", 11 x 2 + 7 x 2 = 36 for the direct route (its price from the pricing table)
    assert {r["deployment"]: r["cost_micro_usd"] for r in rows} == {"fakeai/up": 64, "fakeai/direct": 36}
    assert round(spend["spent"] * 1e6) == 100 and spend["reserved"] == 0


def test_settlement_never_takes_spend_past_the_budget(db_url: tuple[str, str | None]) -> None:
    async def run() -> list[tuple[int, int]]:
        engine = await migrated(db_url)
        try:
            budgets = BudgetStore(engine)
            seen = []
            first = await budgets.reserve("key_s", 100, None, 30, 0)
            second = await budgets.reserve("key_s", 100, None, 30, 0)
            await budgets.settle(first, 20)  # within its reservation: charged as it is
            seen.append(((await budgets.spend("key_s", None, 0)).spent, 0))
            await budgets.settle(second, 45)  # beyond it, but the budget has the money free: charged in full
            third = await budgets.reserve("key_s", 100, None, 30, 0)
            fourth = await budgets.reserve("key_s", 100, None, 5, 0)
            await budgets.settle(third, 1000)  # a worst case far off: only what nobody else holds
            spend = await budgets.spend("key_s", None, 0)
            seen.append((spend.spent, spend.reserved))
            await budgets.settle(fourth, 1000)  # its own reservation, nothing more is free
            spend = await budgets.spend("key_s", None, 0)
            seen.append((spend.spent, spend.reserved))
            return seen
        finally:
            await engine.dispose()

    assert asyncio.run(run()) == [(20, 0), (95, 5), (100, 0)]


TINY_TOOL = {"type": "function", "function": {"name": "f"}}


@pytest.fixture
def two_replicas(tmp_path: Path, server_database: str | None) -> Iterator[list[ServerThread]]:
    """Two replicas of a server sharing one database, the default model at $200 per million tokens
    each way (a token costs 200 micro-USD)."""
    settings = priced(tmp_path, server_database)
    models = [m.model_copy(update={"input_price_per_million": 200.0, "output_price_per_million": 200.0})
              for m in settings.models]  # fmt: skip
    settings = settings.model_copy(update={"models": models})
    with all_running(ServerThread(settings) for _ in range(2)) as servers:
        yield servers


def test_fifty_concurrent_tool_requests_on_two_replicas_stay_within_a_dollar(two_replicas: list[ServerThread]) -> None:
    # the repro: tools add a preamble the body's bytes do not bound (a 101-byte body, 135 prompt tokens)
    body = json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], "tools": [TINY_TOOL],
                       "max_tokens": 4}, separators=(",", ":")).encode()  # fmt: skip
    with admin_client(two_replicas[0]) as admin:
        key = create_key(admin, "dollar", max_budget=1.0)

    async def fire() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {key['key']}", "content-type": "application/json"}
        async with httpx.AsyncClient(headers=headers, timeout=300) as http:
            return await asyncio.gather(*(http.post(f"{two_replicas[i % 2].base_url}/v1/chat/completions",
                                                    content=body) for i in range(50)))  # fmt: skip

    responses = asyncio.run(fire())
    ok = [r for r in responses if r.status_code == 200]
    assert {r.status_code for r in responses} <= {200, 429} and ok
    assert all(r.json()["error"]["code"] == "insufficient_quota" for r in responses if r.status_code == 429)
    assert all(r.json()["usage"]["prompt_tokens"] > len(body) for r in ok)  # more tokens than body bytes
    costs: dict[str, Any] = {}
    for server in two_replicas:  # each replica writes its own ledger rows before answering
        with admin_client(server) as admin:
            costs = admin.get("/admin/usage", params={"group_by": "", "key_id": key["id"]}).json()["totals"]
    with admin_client(two_replicas[0]) as admin:
        spend = admin.get(f"/admin/keys/{key['id']}").json()["spend"]
    assert spend["reserved"] == 0 and round(spend["spent"] * 1e6) <= 1_000_000
    # every request cost at most what it had reserved: the budget took each one's full, real cost
    assert costs["cost_micro_usd"] == round(spend["spent"] * 1e6) == 200 * sum(r.json()["usage"]["total_tokens"]
                                                                               for r in ok)  # fmt: skip
    assert costs["requests"] == 50


def test_an_upstream_reserves_the_body_bytes_plus_its_documented_overheads(
    tmp_path: Path, upstream: tuple[FakeOpenAI, str]
) -> None:
    _, url = upstream
    bare = PromptOverheadConfig(per_request=0, per_message=0, tools=0, per_tool=0, per_attachment=0)
    paid = DeploymentConfig(provider="fakeai", model="up", input_price_per_million=1, output_price_per_million=1)
    settings = make_settings(master_key=MASTER, data_dir=str(tmp_path),
                             providers={"fakeai": ProviderConfig(base_url=f"{url}/v1", api_key="sk-up")},
                             upstream_models=[
                                 UpstreamModelConfig(name="documented", deployments=[paid]),
                                 UpstreamModelConfig(name="bare", deployments=[
                                     paid.model_copy(update={"prompt_overhead": bare})])])  # fmt: skip
    with serve(settings) as server, admin_client(server) as admin:
        worst = {}
        for model in ("documented", "bare"):
            body = json.dumps({"model": model, "messages": ASK, "tools": [TINY_TOOL], "max_tokens": 7}).encode()
            worst[model] = worst_case(server, admin, body) - len(body) - 7  # a token costs one micro-USD
    defaults = PromptOverheadConfig()
    assert worst == {"documented": defaults.per_request + defaults.per_message + defaults.tools + defaults.per_tool,
                     "bare": 0}  # fmt: skip
