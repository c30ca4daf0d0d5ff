"""The application factory: everything the server needs is built here and nowhere else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from chatgate.backends.local import close_local_backend, load_local_backend
from chatgate.backends.local.backend import LocalBackend
from chatgate.config import Settings
from chatgate.exchange import Exchange
from chatgate.errors import ChatgateError, MethodNotAllowedError, NotFoundError
from chatgate.gateway.budget import BudgetStore
from chatgate.gateway.cache import open_cache
from chatgate.gateway.keys import KeyStore
from chatgate.gateway.ledger import Ledger
from chatgate.gateway.limiter import open_limiter
from chatgate.gateway.store import database_url, migrate, open_engine
from chatgate.gateway.stored import StoredCompletions
from chatgate.routing.factory import UpstreamClients, build_router
from chatgate.server.accounting import Accounting
from chatgate.server.admin import admin_routes
from chatgate.server.auth import Gatekeeper
from chatgate.server.completions import completion_routes
from chatgate.server.limits import BodyLimitMiddleware
from chatgate.server.middleware import RequestIdMiddleware
from chatgate.server.routes import routes

log = logging.getLogger("chatgate.server")


def create_app(settings: Settings) -> Starlette:
    """A Starlette app serving ``settings``; models load at startup and unload at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        locals_: list[LocalBackend] = []
        clients = UpstreamClients.create()
        engine = None
        try:
            engine = open_engine(database_url(settings.database_url, settings.data_dir))
            await migrate(engine)
            app.state.gate = Gatekeeper(settings.master_key, KeyStore(engine) if settings.master_key else None)
            app.state.limiter = open_limiter(settings.redis_url, settings.redis_timeout_seconds)
            app.state.accounting = _accounting(settings, engine)
            for cfg in settings.models:
                locals_.append(load_local_backend(cfg, settings))
            app.state.router = build_router(settings, locals_, clients)
            app.state.local_backends = locals_
            yield
        finally:
            await clients.aclose()
            if getattr(app.state, "accounting", None) is not None:
                if app.state.accounting.budgets is not None:  # writes spend, returns every budget lease
                    await app.state.accounting.budgets.aclose()
                await app.state.accounting.aclose()  # writes the ledger's last rows
            if getattr(app.state, "limiter", None) is not None:
                await app.state.limiter.aclose()
            if engine is not None:
                await engine.dispose()
            for backend in locals_:
                close_local_backend(backend)

    app = Starlette(
        routes=[*routes(), *completion_routes(), *admin_routes()],
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes),
        ],
        exception_handlers=_exception_handlers(),
        lifespan=lifespan,
    )
    app.state.limits = settings.limits
    app.state.stopping = asyncio.Event()
    """Set at the shutdown deadline (``server.connections.GracefulServer``): requests in flight end."""
    return app


def _accounting(settings: Settings, engine: AsyncEngine) -> Accounting:
    ledger = None
    if settings.ledger:
        ledger = Ledger(engine, flush_seconds=settings.ledger_flush_seconds)
        ledger.start()
    cache = open_cache(settings.redis_url, use_redis=settings.cache.redis, ttl_seconds=settings.cache.ttl_seconds,
                       max_entries=settings.cache.max_entries, timeout=settings.redis_timeout_seconds)  # fmt: skip
    budgets = None
    if settings.master_key:
        budgets = BudgetStore(engine, lease_seconds=settings.budget_lease_seconds,
                              flush_seconds=settings.budget_flush_seconds,
                              idle_seconds=settings.budget_lease_idle_seconds)  # fmt: skip
        budgets.start()
    return Accounting(budgets=budgets, ledger=ledger, cache=cache,
                      stored=StoredCompletions(engine), reserve_max_tokens=settings.reserve_max_tokens,
                      cache_default=settings.cache.enabled)  # fmt: skip


def _exception_handlers() -> dict[Any, Callable[[Request, Exception], Any]]:
    return {ChatgateError: _render_error, HTTPException: _render_http_exception, ClientDisconnect: _disconnected}


async def _disconnected(request: Request, exc: Exception) -> Response:
    """The client went away while sending its body: nothing to answer, nothing to log but the fact."""
    request.scope.setdefault("state", {})["disconnected"] = True
    return Response(status_code=499)


async def _render_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ChatgateError)
    state = request.scope.setdefault("state", {})
    state["error_type"] = exc.type
    headers = exc.headers()
    ctx = state.get("ctx")
    if isinstance(ctx, Exchange) and ctx.attempts:
        headers["x-chatgate-attempts"] = str(ctx.attempts)
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


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
