"""OpenAI's stored-completion routes: list, retrieve, update (metadata), delete, and the input
messages of one; each caller sees only what its own key stored."""

from __future__ import annotations

from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatgate.errors import InvalidRequestError
from chatgate.gateway.stored import Order, StoredCompletions
from chatgate.server.auth import identify
from chatgate.server.deps import gateway_of
from chatgate.server.limits import read_model


class CompletionUpdate(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    metadata: dict[str, str] | None = Field(default=None, max_length=16)


async def _scope(request: Request) -> tuple[StoredCompletions, str]:
    """The stored completions and whose of them the caller may see (its key's, or the admin's)."""
    caller = await identify(request)
    return gateway_of(request).stored, caller.key.id if caller.key is not None else ""


def _limit(request: Request, default: int = 20) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= 100:
        raise InvalidRequestError("limit must be an integer between 1 and 100.", param="limit",
                                  code="invalid_value")  # fmt: skip
    return int(raw)


def _order(request: Request) -> Order:
    order = request.query_params.get("order", "asc")
    if order not in ("asc", "desc"):
        raise InvalidRequestError("order must be 'asc' or 'desc'.", param="order", code="invalid_value")
    return cast(Literal["asc", "desc"], order)


def _metadata_filter(request: Request) -> dict[str, str]:
    """``metadata[k]=v`` pairs (how the SDKs send a metadata filter), also accepted as ``metadata.k=v``."""
    out: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name.startswith("metadata[") and name.endswith("]"):
            out[name[len("metadata[") : -1]] = value
        elif name.startswith("metadata."):
            out[name[len("metadata.") :]] = value
    return out


async def list_completions(request: Request) -> Response:
    stored, who = await _scope(request)
    page = await stored.list(who, model=request.query_params.get("model"), metadata=_metadata_filter(request),
                             after=request.query_params.get("after"), limit=_limit(request),
                             order=_order(request))  # fmt: skip
    return JSONResponse(page.body())


async def get_completion(request: Request) -> Response:
    stored, who = await _scope(request)
    return JSONResponse(await stored.get(who, request.path_params["completion_id"]))


async def update_completion(request: Request) -> Response:
    stored, who = await _scope(request)
    body = await read_model(request, CompletionUpdate)
    return JSONResponse(await stored.update(who, request.path_params["completion_id"], body.metadata))


async def delete_completion(request: Request) -> Response:
    stored, who = await _scope(request)
    return JSONResponse(await stored.delete(who, request.path_params["completion_id"]))


async def list_messages(request: Request) -> Response:
    stored, who = await _scope(request)
    page = await stored.messages(who, request.path_params["completion_id"], after=request.query_params.get("after"),
                                 limit=_limit(request), order=_order(request))  # fmt: skip
    return JSONResponse(page.body())


def completion_routes() -> list[Route]:
    out: list[Route] = []
    for prefix in ("/v1", "/api/v1"):
        base = f"{prefix}/chat/completions"
        out += [
            Route(base, list_completions, methods=["GET"]),
            Route(f"{base}/{{completion_id}}", get_completion, methods=["GET"]),
            Route(f"{base}/{{completion_id}}", update_completion, methods=["POST"]),
            Route(f"{base}/{{completion_id}}", delete_completion, methods=["DELETE"]),
            Route(f"{base}/{{completion_id}}/messages", list_messages, methods=["GET"]),
        ]
    return out


__all__ = ["completion_routes"]
