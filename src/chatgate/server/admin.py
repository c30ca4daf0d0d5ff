"""The admin API (master key only): virtual keys. ``chatgate keys …`` drives it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatgate.gateway.keys import KeyStore
from chatgate.protocol.validation import parse_model
from chatgate.server.auth import Gatekeeper


class KeyCreate(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    expires_at: int | None = Field(default=None, ge=0)
    allowed_models: list[str] | None = None
    metadata: dict[str, Any] | None = None
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)


class KeyUpdate(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    expires_at: int | None = Field(default=None, ge=0)
    allowed_models: list[str] | None = None
    metadata: dict[str, Any] | None = None
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)


async def _store(request: Request) -> KeyStore:
    gate: Gatekeeper = request.app.state.gate
    await gate.admin(request)
    assert gate.keys is not None  # a master key always comes with a store
    return gate.keys


async def create_key(request: Request) -> Response:
    store = await _store(request)
    body = parse_model(KeyCreate, await request.body())
    record, key = await store.create(body.name, expires_at=body.expires_at, allowed_models=body.allowed_models,
                                     metadata=body.metadata, rpm=body.rpm, tpm=body.tpm)  # fmt: skip
    return JSONResponse({**record.public(), "key": key}, status_code=201)


async def list_keys(request: Request) -> Response:
    store = await _store(request)
    return JSONResponse({"object": "list", "data": [k.public() for k in await store.list()]})


async def get_key(request: Request) -> Response:
    store = await _store(request)
    return JSONResponse((await store.get(request.path_params["key_id"])).public())


async def update_key(request: Request) -> Response:
    store = await _store(request)
    changes = parse_model(KeyUpdate, await request.body()).model_dump(exclude_unset=True)
    return JSONResponse((await store.update(request.path_params["key_id"], **changes)).public())


async def revoke_key(request: Request) -> Response:
    store = await _store(request)
    return JSONResponse((await store.revoke(request.path_params["key_id"])).public())


def admin_routes() -> list[Route]:
    return [
        Route("/admin/keys", create_key, methods=["POST"]),
        Route("/admin/keys", list_keys, methods=["GET"]),
        Route("/admin/keys/{key_id}", get_key, methods=["GET"]),
        Route("/admin/keys/{key_id}", update_key, methods=["PATCH"]),
        Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
    ]
