"""The composition root: everything a running chatgate is made of, built from the settings in one place.

``chatgate serve`` (through ``create_app``), the in-process client (``chatgate.OpenAI``) and
``chatgate chat`` all open a :class:`Runtime` and talk to its :class:`~chatgate.gateway.gateway.Gateway`;
nothing else builds backends, the router or the gateway's stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from chatgate.backends.local import LocalBackend, close_local_backend, load_local_backend
from chatgate.config import Settings
from chatgate.errors import ChatgateError
from chatgate.exchange import Exchange
from chatgate.gateway.budget import BudgetStore
from chatgate.gateway.cache import open_cache
from chatgate.gateway.gateway import Gateway, GatewayPolicy
from chatgate.gateway.keys import KeyStore
from chatgate.gateway.ledger import Ledger
from chatgate.gateway.limiter import open_limiter
from chatgate.gateway.store import database_url, migrate, open_engine
from chatgate.gateway.stored import StoredCompletions
from chatgate.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from chatgate.routing import Router
from chatgate.routing.factory import UpstreamClients, build_router
from chatgate.streams import aclose


@dataclass
class Runtime:
    settings: Settings
    database: AsyncEngine
    gateway: Gateway
    keys: KeyStore | None
    """The virtual keys (None without a master key: open mode)."""
    local: list[LocalBackend] = field(default_factory=list)
    clients: UpstreamClients | None = None

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        """Open the database (migrated to the latest schema), load the local models, build the router and
        the gateway around it. Close it with :meth:`aclose` (or use :func:`running`)."""
        database = open_engine(database_url(settings.database_url, settings.data_dir))
        local: list[LocalBackend] = []
        clients = UpstreamClients.create()
        try:
            await migrate(database)
            for cfg in settings.models:  # seconds of file reading and llama.cpp set-up: off the event loop
                local.append(await asyncio.to_thread(load_local_backend, cfg, settings))
            router = build_router(settings, local, clients)
            gateway = _gateway(settings, database, router)
        except BaseException:
            await _release(database, local, clients)
            raise
        keys = KeyStore(database) if settings.master_key else None
        return cls(settings, database, gateway, keys, local, clients)

    # --- in-process exchanges (the client and the CLI; the server makes its own, per HTTP request) ---------

    async def complete(self, req: ChatCompletionRequest, *, body_bytes: int = 0) -> ChatCompletion:
        """One chat completion through the gateway, with its ledger row as the server would write it."""
        ex = _exchange(req, body_bytes)
        try:
            completion = await self.gateway.complete(req, ex)
        except ChatgateError as exc:
            self._finish(ex, exc)
            raise
        self._finish(ex)
        return completion

    async def stream(
        self, req: ChatCompletionRequest, *, body_bytes: int = 0
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """A streamed chat completion through the gateway; its ledger row once it ends (closed early by the
        caller: status 499, as a client that disconnects)."""
        ex = _exchange(req, body_bytes)
        chunks = self.gateway.stream(req, ex)
        error: ChatgateError | None = None
        try:
            async for chunk in chunks:
                yield chunk
        except ChatgateError as exc:
            error = exc
            raise
        except BaseException:
            ex.disconnected = True
            raise
        finally:
            await aclose(chunks)
            self._finish(ex, error)

    def _finish(self, ex: Exchange, error: ChatgateError | None = None) -> None:
        ex.finished_at = time.monotonic()
        ex.status = 499 if ex.disconnected else error.status if error is not None else 200
        ex.error_type = error.type if error is not None else None
        self.gateway.finish(ex)

    async def aclose(self) -> None:
        """Write what is left (ledger rows, budget spend), then release everything."""
        try:
            await self.gateway.aclose()
        finally:
            await _release(self.database, self.local, self.clients)
            self.local = []
            self.clients = None


def _gateway(settings: Settings, database: AsyncEngine, router: Router) -> Gateway:
    ledger = None
    if settings.ledger:
        ledger = Ledger(database, flush_seconds=settings.ledger_flush_seconds)
        ledger.start()
    budgets = None
    if settings.master_key:
        budgets = BudgetStore(database, lease_seconds=settings.budget_lease_seconds,
                              flush_seconds=settings.budget_flush_seconds,
                              idle_seconds=settings.budget_lease_idle_seconds)  # fmt: skip
        budgets.start()
    cache = open_cache(settings.redis_url, use_redis=settings.cache.redis, ttl_seconds=settings.cache.ttl_seconds,
                       max_entries=settings.cache.max_entries, timeout=settings.redis_timeout_seconds)  # fmt: skip
    return Gateway(
        router,
        limiter=open_limiter(settings.redis_url, settings.redis_timeout_seconds),
        cache=cache,
        stored=StoredCompletions(database),
        budgets=budgets,
        ledger=ledger,
        policy=GatewayPolicy(reserve_max_tokens=settings.reserve_max_tokens, cache_default=settings.cache.enabled),
    )


def _exchange(req: ChatCompletionRequest, body_bytes: int) -> Exchange:
    return Exchange(request_id="req_" + uuid.uuid4().hex, endpoint="chat.completions", model_asked=req.model,
                    stream=bool(req.stream), body_bytes=body_bytes)  # fmt: skip


async def _release(database: AsyncEngine, local: list[LocalBackend], clients: UpstreamClients | None) -> None:
    try:
        if clients is not None:
            await clients.aclose()
        await database.dispose()
    finally:
        for backend in local:
            close_local_backend(backend)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Runtime]:
    """A runtime for the length of a ``with`` block."""
    runtime = await Runtime.open(settings)
    try:
        yield runtime
    finally:
        await runtime.aclose()
