"""What a chat completion costs and who pays: budget reservations, settlement, the usage ledger,
the response cache and stored completions, as the chat route uses them.

A request's life: :meth:`Accounting.reserve` holds its worst-case cost (budgeted keys only) before
it is routed; :meth:`Accounting.settle` charges the real cost (from the usage the model reported,
at the price of the deployment that answered) as soon as the answer is complete, and, through the
middleware's ``on_finish`` hook, for whatever ended otherwise (errors, disconnects). Each request then
leaves one ledger row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chatgate.exchange import Exchange
from chatgate.gateway.budget import BudgetStore, Reservation
from chatgate.gateway.cache import ResponseCache, cache_key, deterministic
from chatgate.gateway.ledger import Ledger, UsageRecord
from chatgate.gateway.stored import StoredCompletions
from chatgate.protocol import ChatCompletionRequest
from chatgate.routing import Router
from chatgate.server.auth import Caller
from chatgate.server.limits import sized

log = logging.getLogger("chatgate.server")
CACHE_HEADER = "x-chatgate-cache"


@dataclass
class Accounting:
    budgets: BudgetStore | None
    ledger: Ledger | None
    cache: ResponseCache
    stored: StoredCompletions
    reserve_max_tokens: int
    cache_default: bool

    # --- budgets -------------------------------------------------------------------------------

    async def reserve(
        self, caller: Caller, req: ChatCompletionRequest, router: Router, ctx: Exchange, *, body_bytes: int,
        state: dict[str, Any],
    ) -> ChatCompletionRequest:  # fmt: skip
        """Hold the worst case of ``req`` on the caller's budget (429 ``insufficient_quota`` when it does
        not fit); the request to route, its completion capped where nothing else bounds it."""
        key = caller.key
        if key is None or key.max_budget is None or self.budgets is None:
            return req
        deployments = router.deployments(req, ctx)
        limit = req.completion_limit()
        unbounded = [d for d in deployments if d.max_output_tokens is None]
        if limit is None and unbounded and not any(d.local for d in deployments):
            limit = self.reserve_max_tokens  # an upstream could otherwise answer at any length: cap it
            req = req.model_copy(update={"max_completion_tokens": limit})

        def worst_case() -> int:  # a local deployment renders the prompt: off the event loop when it is large
            worst = 0
            for d in deployments:
                bounds = [x for x in (limit, d.max_output_tokens) if x is not None]
                out = min(bounds) if bounds else self.reserve_max_tokens
                worst = max(worst, d.price.cost(d.prompt_bound(req, body_bytes), out * req.choices()))
            return worst

        worst = await sized(worst_case, body_bytes)
        if worst > 0:  # a free request needs no money held
            state["reservation"] = await self.budgets.reserve(key.id, key.max_budget, key.budget_period, worst,
                                                              time.time())  # fmt: skip
        return req

    async def settle(self, state: dict[str, Any]) -> None:
        """Charge the request's real cost to its reservation (once; nothing to do without one)."""
        reservation: Reservation | None = state.get("reservation")
        if reservation is None or reservation.settled or self.budgets is None:
            return
        cost = cost_of(state)
        if cost > reservation.amount:  # the worst case was wrong: the budget still holds (see BudgetStore.settle)
            log.warning("request cost beyond its reservation", extra={"fields": {
                "request_id": state.get("request_id"), "cost": cost, "reserved": reservation.amount}})  # fmt: skip
        try:
            await self.budgets.settle(reservation, cost)
        except Exception:
            log.exception("budget settlement failed", extra={"fields": {"request_id": state.get("request_id")}})

    # --- cache ---------------------------------------------------------------------------------

    def cache_key(self, caller: Caller, req: ChatCompletionRequest, headers: Mapping[str, str]) -> str | None:
        """The cache entry of ``req`` when caching applies to it: asked by the request's header, else the
        key's setting, else the server's default; and deterministic."""
        asked = headers.get(CACHE_HEADER, "").strip().lower()
        wanted = self.cache_default
        if asked:
            wanted = asked in ("1", "true", "on", "yes")
        elif caller.key is not None and caller.key.cache is not None:
            wanted = caller.key.cache
        if not wanted or not deterministic(req):
            return None
        return cache_key(req, owner(caller))

    async def cached(self, entry: str) -> str | None:
        """The cached answer, or None; a cache that cannot be reached is a miss, not an error."""
        try:
            return await self.cache.get(entry)
        except Exception as exc:  # the cache handles Redis away itself; anything else: a miss, no traceback
            log.warning("response cache failed (%s); answering without it", type(exc).__name__)
            return None

    async def remember(self, entry: str, answer: str) -> None:
        try:
            await self.cache.put(entry, answer)
        except Exception as exc:
            log.warning("response cache failed (%s); the answer was not cached", type(exc).__name__)

    # --- the end of a request ----------------------------------------------------------------

    async def finish(self, state: dict[str, Any], status: int, latency_ms: float) -> None:
        """The ``on_finish`` hook: settle what is left and write the ledger row."""
        if state.get("disconnected"):
            status = 499
        if self.ledger is not None:
            ctx: Exchange | None = state.get("ctx")
            ttft = None
            if ctx is not None and ctx.first_token_at is not None:
                ttft = round((ctx.first_token_at - ctx.received_at) * 1000)
            deployment = "cache" if state.get("cache_hit") else ctx.deployment if ctx is not None else None
            self.ledger.record(UsageRecord(
                request_id=state["request_id"], created_at=int(time.time()), key_id=state.get("key_id"),
                model=state.get("model"), deployment=deployment,
                prompt_tokens=state.get("prompt_tokens", 0), completion_tokens=state.get("completion_tokens", 0),
                cached_tokens=state.get("cached_tokens", 0), cost=cost_of(state), latency_ms=round(latency_ms),
                ttft_ms=ttft, status=status, error_type=state.get("error_type"),
                cache_hit=bool(state.get("cache_hit")),
            ))  # fmt: skip
        await self.settle(state)

    async def aclose(self) -> None:
        if self.ledger is not None:
            await self.ledger.aclose()
        await self.cache.aclose()


def owner(caller: Caller) -> str:
    """Whose stored completions and cache entries these are: the key's id, or ``""`` for the admin and
    open mode."""
    return caller.key.id if caller.key is not None else ""


def cost_of(state: dict[str, Any]) -> int:
    """Micro-USD the request cost: nothing from the cache or when no deployment answered; else its
    usage at the price of the deployment that answered (for a stream cut short without usage, its
    delivered chunks, a token each, and the request's size in bytes / 4 for the prompt)."""
    ctx: Exchange | None = state.get("ctx")
    if state.get("cache_hit") or ctx is None or ctx.deployment is None:
        return 0
    if "prompt_tokens" in state:
        return ctx.price.cost(state["prompt_tokens"], state.get("completion_tokens", 0))
    return ctx.price.cost(state.get("body_bytes", 0) // 4, state.get("streamed_chunks", 0))
