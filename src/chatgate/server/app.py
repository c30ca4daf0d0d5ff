"""The application factory: the HTTP app around one :class:`~chatgate.runtime.Runtime` (the composition
root), its middleware, routes and error rendering."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from chatgate.config import Settings
from chatgate.errors import ChatgateError, MethodNotAllowedError, NotFoundError
from chatgate.runtime import Runtime
from chatgate.server.admin import admin_routes
from chatgate.server.auth import Gatekeeper
from chatgate.server.completions import completion_routes
from chatgate.server.limits import BodyLimitMiddleware
from chatgate.server.messages import message_routes
from chatgate.server.middleware import ExchangeMiddleware, Finisher, exchange_of
from chatgate.server.responses import responses_routes
from chatgate.server.routes import routes
from chatgate.server.text_completions import text_completion_routes

log = logging.getLogger("chatgate.server")


def create_app(settings: Settings) -> Starlette:
    """A Starlette app serving ``settings``: its :class:`~chatgate.runtime.Runtime` opens at startup (models
    loaded, database migrated) and closes at shutdown (the ledger's last rows and the budgets' spend written)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await Runtime.open(settings)
        app.state.runtime = runtime
        app.state.gate = Gatekeeper(settings.master_key, runtime.keys)
        try:
            yield
        finally:
            await runtime.aclose()

    app = Starlette(
        routes=[
            *routes(),
            *completion_routes(),
            *responses_routes(),
            *message_routes(),
            *text_completion_routes(),
            *admin_routes(),
        ],
        middleware=[
            Middleware(ExchangeMiddleware, finisher=_finisher),
            Middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes),
        ],
        exception_handlers=_exception_handlers(),
        lifespan=lifespan,
    )
    app.state.limits = settings.limits
    app.state.stopping = asyncio.Event()
    """Set at the shutdown deadline (``server.connections.GracefulServer``): requests in flight end."""
    return app


def _finisher(scope: Scope) -> Finisher | None:
    """What finishes a metered exchange: the running gateway's ``finish`` (ledger row, metrics)."""
    runtime: Runtime | None = getattr(scope["app"].state, "runtime", None)
    return runtime.gateway.finish if runtime is not None else None


def _exception_handlers() -> dict[Any, Callable[[Request, Exception], Any]]:
    return {ChatgateError: _render_error, HTTPException: _render_http_exception, ClientDisconnect: _disconnected}


async def _disconnected(request: Request, exc: Exception) -> Response:
    """The client went away while sending its body: nothing to answer, nothing to log but the fact."""
    exchange_of(request).disconnected = True
    return Response(status_code=499)


async def _render_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ChatgateError)
    exchange_of(request).error_type = exc.type
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


async def _render_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    error: ChatgateError
    if exc.status_code == 405:
        error = MethodNotAllowedError(f"Invalid method for URL ({where})")
    elif exc.status_code == 404:
        error = NotFoundError(f"Invalid URL ({where})")
    else:
        error = ChatgateError(str(exc.detail))
        return JSONResponse(
            {"error": {"message": str(exc.detail), "type": "invalid_request_error", "param": None, "code": None}},
            status_code=exc.status_code,
        )
    return await _render_error(request, error)
