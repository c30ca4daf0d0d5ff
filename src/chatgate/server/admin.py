"""The admin API (master key only): virtual keys with their limits and budgets, and usage from the
ledger. ``chatgate keys …`` and ``chatgate usage`` drive it."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatgate.errors import InvalidRequestError
from chatgate.exchange import Period
from chatgate.gateway.keys import KeyRecord, KeyStore
from chatgate.gateway.ledger import GROUPS, GroupBy, usage_report
from chatgate.pricing import micro_usd, usd
from chatgate.server.deps import gate_of, gateway_of
from chatgate.server.limits import read_model

INT32_MAX = 2**31 - 1  # the rpm and tpm columns are INTEGER


class KeyCreate(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    expires_at: int | None = Field(default=None, ge=0, le=2**62)
    allowed_models: list[str] | None = None
    metadata: dict[str, Any] | None = None
    rpm: int | None = Field(default=None, ge=1, le=INT32_MAX)
    tpm: int | None = Field(default=None, ge=1, le=INT32_MAX)
    max_budget: float | None = Field(default=None, ge=0, le=1e12, allow_inf_nan=False)
    """USD per budget period."""
    budget_period: Period | None = None
    cache: bool | None = None

    def settings(self) -> dict[str, Any]:
        out = self.model_dump(exclude_unset=True, exclude={"name"})
        if "max_budget" in out:
            out["max_budget"] = None if out["max_budget"] is None else micro_usd(out["max_budget"])
        return out


class KeyUpdate(KeyCreate):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)  # type: ignore[assignment]

    def settings(self) -> dict[str, Any]:
        out = super().settings()
        if self.name is not None:
            out["name"] = self.name
        return out


async def _store(request: Request) -> KeyStore:
    gate = gate_of(request)
    await gate.admin(request)
    assert gate.keys is not None  # a master key always comes with a store
    return gate.keys


async def create_key(request: Request) -> Response:
    store = await _store(request)
    body = await read_model(request, KeyCreate)
    record, key = await store.create(body.name, **body.settings())
    return JSONResponse({**await _public(request, record), "key": key}, status_code=201)


async def list_keys(request: Request) -> Response:
    store = await _store(request)
    return JSONResponse({"object": "list", "data": [await _public(request, k) for k in await store.list()]})


async def get_key(request: Request) -> Response:
    store = await _store(request)
    return JSONResponse(await _public(request, await store.get(request.path_params["key_id"])))


async def update_key(request: Request) -> Response:
    store = await _store(request)
    changes = (await read_model(request, KeyUpdate)).settings()
    return JSONResponse(await _public(request, await store.update(request.path_params["key_id"], **changes)))


async def revoke_key(request: Request) -> Response:
    store = await _store(request)
    return JSONResponse(await _public(request, await store.revoke(request.path_params["key_id"])))


async def _public(request: Request, record: KeyRecord) -> dict[str, Any]:
    """The key as the admin sees it, with its spend in the current budget period."""
    budgets = gateway_of(request).budgets
    out = record.public()
    if budgets is not None:
        spend = await budgets.spend(record.id, record.budget_period, time.time())
        out["spend"] = {"spent": usd(spend.spent), "reserved": usd(spend.reserved),
                        "period_start": spend.period_start or None, "resets_at": spend.resets_at}  # fmt: skip
    return out


async def usage(request: Request) -> Response:
    """Requests, tokens and cost from the ledger, grouped by any of key, model, day, deployment, endpoint, with
    totals.

    Query: ``group_by`` (comma-separated; default ``key,model,day``), ``start`` and ``end`` (UTC days,
    YYYY-MM-DD, inclusive), ``key_id``, ``model``, ``endpoint``."""
    await _store(request)
    query = request.query_params
    groups = [g for g in query.get("group_by", "key,model,day").split(",") if g]
    for g in groups:
        if g not in GROUPS:
            raise InvalidRequestError(f"Cannot group usage by '{g}': use key, model, day, deployment or endpoint.",
                                      param="group_by", code="invalid_value")  # fmt: skip
    for bound in ("start", "end"):
        if bound in query and not _is_day(query[bound]):
            raise InvalidRequestError(f"{bound} must be a day as YYYY-MM-DD.", param=bound, code="invalid_value")
    ledger = gateway_of(request).ledger
    if ledger is None:
        raise InvalidRequestError("The usage ledger is off (ledger: false).", code="ledger_disabled")
    await ledger.flush()  # this replica's rows in, so the answer includes every request it served
    report = await usage_report(ledger.engine, cast(list[GroupBy], groups), start=query.get("start"),
                                end=query.get("end"), key_id=query.get("key_id"), model=query.get("model"),
                                endpoint=query.get("endpoint"))  # fmt: skip
    return JSONResponse(report)


def _is_day(value: str) -> bool:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10


def admin_routes() -> list[Route]:
    return [
        Route("/admin/keys", create_key, methods=["POST"]),
        Route("/admin/keys", list_keys, methods=["GET"]),
        Route("/admin/keys/{key_id}", get_key, methods=["GET"]),
        Route("/admin/keys/{key_id}", update_key, methods=["PATCH"]),
        Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
        Route("/admin/usage", usage, methods=["GET"]),
    ]
