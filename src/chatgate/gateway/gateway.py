"""The Gateway: a Backend wrapping the Router, where keys' limits, budgets, the response cache, stored
completions and the ledger hold, for plain and streamed answers alike, written once.

A request walks: rate limits → cache → budget → route → settle → keep (cache, ``store``); when its
response has gone out, :meth:`Gateway.finish` turns its :class:`~chatgate.exchange.Exchange` into the
ledger row and the gateway's metrics. Every API surface goes through the same Gateway, so whatever a
key may do holds for every endpoint. Nothing here touches the database on the request path: budgets
are held and settled in memory against the replica's lease (see ``budget.py``), the ledger is written
in batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from chatgate.errors import RateLimitError
from chatgate.exchange import Exchange, Grant
from chatgate.gateway.budget import BudgetStore, Reservation
from chatgate.gateway.cache import ResponseCache, cache_key, deterministic
from chatgate.gateway.ledger import Ledger, UsageRecord
from chatgate.gateway.limiter import Limiter
from chatgate.gateway.stats import GatewayStats
from chatgate.gateway.stored import StoredCompletions
from chatgate.gateway.worstcase import worst_case
from chatgate.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model, StreamOptions
from chatgate.protocol.assemble import Assembler, as_chunks, fresh, new_id
from chatgate.routing import Router
from chatgate.streams import aclose

log = logging.getLogger("chatgate.gateway")


@dataclass(frozen=True)
class GatewayPolicy:
    reserve_max_tokens: int = 4096
    """Completion tokens a budgeted request without ``max_tokens`` holds (and is capped to upstream)."""
    cache_default: bool = True
    """The response cache for callers whose key and request do not say."""


class Gateway:
    """A Backend: the Router's answers, governed."""

    def __init__(
        self,
        router: Router,
        *,
        limiter: Limiter,
        cache: ResponseCache,
        stored: StoredCompletions,
        budgets: BudgetStore | None = None,
        ledger: Ledger | None = None,
        policy: GatewayPolicy | None = None,
    ) -> None:
        self.router = router
        self.limiter = limiter
        self.cache = cache
        self.stored = stored
        self.budgets = budgets
        self.ledger = ledger
        self.policy = policy or GatewayPolicy()
        self.stats = GatewayStats()

    # --- Backend -------------------------------------------------------------------------------

    def models(self) -> list[Model]:
        return self.router.models()

    def model(self, name: str) -> Model:
        return self.router.model(name)

    async def complete(self, req: ChatCompletionRequest, ex: Exchange) -> ChatCompletion:
        entry = await self._admit(req, ex)
        if entry is not None:
            hit = await self._cached(entry, req, ex)
            if hit is not None:
                return hit
        reservation, req = await self._reserve(req, ex)
        try:
            completion = await self.router.complete(req, ex)
            ex.model_answered, ex.usage = completion.model, completion.usage
        finally:
            await self._settle(reservation, ex)
        if req.store:  # a stored answer's id must be unique: chatgate's own, not what an upstream reused
            completion.id = new_id()
        await self._keep(req, ex, completion, entry)
        return completion

    def stream(self, req: ChatCompletionRequest, ex: Exchange) -> AsyncIterator[ChatCompletionChunk]:
        """The answer's chunks; everything that can refuse the request (limits, budget, an unknown model)
        does so before the first chunk."""
        return self._stream(req, ex)

    async def _stream(self, req: ChatCompletionRequest, ex: Exchange) -> AsyncIterator[ChatCompletionChunk]:
        entry = await self._admit(req, ex)
        if entry is not None:
            hit = await self._cached(entry, req, ex)
            if hit is not None:
                for chunk in as_chunks(hit, include_usage=req.wants_usage_chunk()):
                    yield chunk
                return
        reservation, req = await self._reserve(req, ex)
        hide_usage = not req.wants_usage_chunk()  # asked for anyway: costs and the ledger need it
        routed = req.model_copy(update={"stream_options": StreamOptions(include_usage=True)}) if hide_usage else req
        assembler = Assembler() if entry is not None or req.store else None  # only where the answer is kept
        stored_id = new_id() if req.store else None
        chunks = self.router.stream(routed, ex)
        try:
            async for chunk in chunks:
                if stored_id is not None:
                    chunk.id = stored_id
                shown = _observe(chunk, ex, assembler, hide_usage)
                if shown is not None:
                    yield shown
        finally:
            await aclose(chunks)
            await self._settle(reservation, ex)
        completion = assembler.completion() if assembler is not None else None
        if completion is not None:
            await self._keep(req, ex, completion, entry)

    # --- the end of an exchange ----------------------------------------------------------------

    def finish(self, ex: Exchange) -> None:
        """An exchange whose response has gone out (``ex.status`` set): its ledger row and metrics."""
        self.stats.observe(ex)
        if self.ledger is not None:
            self.ledger.record(UsageRecord.of(ex))

    async def aclose(self) -> None:
        """Write what is left: the ledger's last rows, the budget's spend; close the cache and limiter."""
        if self.ledger is not None:
            await self.ledger.aclose()
        if self.budgets is not None:
            await self.budgets.aclose()
        await self.cache.aclose()
        await self.limiter.aclose()

    # --- the steps -----------------------------------------------------------------------------

    async def _admit(self, req: ChatCompletionRequest, ex: Exchange) -> str | None:
        """Count the request against its key's rate limits (429 when over); its cache entry when caching
        applies to it."""
        grant = ex.grant
        if grant is not None and (grant.rpm or grant.tpm):
            await self._rate_limit(grant, ex, ex.body_bytes // 4 + (req.completion_limit() or 0))
        if not self._caching(grant, ex) or not deterministic(req):
            return None
        ex.cache = "miss"
        return cache_key(req, ex.owner)

    async def _rate_limit(self, grant: Grant, ex: Exchange, tokens: int) -> None:
        verdict = await self.limiter.check(grant.key_id, grant.rpm, grant.tpm, tokens)
        ex.ratelimit_headers = verdict.headers()
        if verdict.refused is not None:
            limit = grant.rpm if verdict.refused == "requests" else grant.tpm
            raise RateLimitError(
                f"Rate limit reached for this API key on {verdict.refused} per minute: limit {limit}. "
                f"Please try again in {verdict.reset:.0f}s.",
                kind=verdict.refused,
                extra_headers={**ex.ratelimit_headers, "retry-after": str(max(1, round(verdict.reset)))},
            )

    def _caching(self, grant: Grant | None, ex: Exchange) -> bool:
        """The request's ``x-chatgate-cache`` header, else its key's setting, else the server's default."""
        if ex.cache_asked is not None:
            return ex.cache_asked
        if grant is not None and grant.cache is not None:
            return grant.cache
        return self.policy.cache_default

    async def _cached(self, entry: str, req: ChatCompletionRequest, ex: Exchange) -> ChatCompletion | None:
        """The cached answer as a new one (free; stored too with ``store: true``), or None on a miss; a cache
        that cannot be reached is a miss, not an error."""
        try:
            raw = await self.cache.get(entry)
        except Exception as exc:  # the cache handles Redis away itself; anything else: a miss, no traceback
            log.warning("response cache failed (%s); answering without it", type(exc).__name__)
            return None
        if raw is None:
            return None
        completion = fresh(ChatCompletion.model_validate_json(raw))
        ex.cache, ex.model_answered, ex.usage = "hit", completion.model, completion.usage
        ex.first_token_at = time.monotonic()
        if req.store:
            await self.stored.save(ex.owner, req, completion)
        return completion

    async def _reserve(
        self, req: ChatCompletionRequest, ex: Exchange
    ) -> tuple[Reservation | None, ChatCompletionRequest]:
        """Hold the worst case of ``req`` on the caller's budget (429 ``insufficient_quota`` when it does not
        fit); the request to route, its completion capped where nothing else bounds it."""
        grant = ex.grant
        if grant is None or grant.budget is None or self.budgets is None:
            return None, req
        worst = await worst_case(req, ex, self.router, self.policy.reserve_max_tokens)
        if worst.amount <= 0:  # a free request needs no money held
            return None, worst.request
        reservation = await self.budgets.reserve(grant.key_id, grant.budget, grant.period, worst.amount,
                                                 time.time())  # fmt: skip
        ex.reserved = reservation.amount
        return reservation, worst.request

    async def _settle(self, reservation: Reservation | None, ex: Exchange) -> None:
        """Charge the exchange's real cost (to its reservation, if it holds one)."""
        ex.cost = cost_of(ex)
        if reservation is None or self.budgets is None:
            return
        if ex.cost > reservation.amount:  # the worst case was wrong: the budget still holds (BudgetStore.settle)
            log.warning("request cost beyond its reservation", extra={"fields": {
                "request_id": ex.request_id, "cost": ex.cost, "reserved": reservation.amount}})  # fmt: skip
        try:
            await self.budgets.settle(reservation, ex.cost)
        except Exception as exc:  # the database away: the ledger row still records the cost
            log.error("budget settlement failed (%s)", type(exc).__name__,
                      extra={"fields": {"request_id": ex.request_id}})  # fmt: skip

    async def _keep(
        self, req: ChatCompletionRequest, ex: Exchange, completion: ChatCompletion, entry: str | None
    ) -> None:
        """Put a finished answer in the cache and, with ``store: true``, among the stored completions."""
        if entry is not None:
            try:
                await self.cache.put(entry, completion.model_dump_json())
            except Exception as exc:
                log.warning("response cache failed (%s); the answer was not cached", type(exc).__name__)
        if req.store:
            try:
                await self.stored.save(ex.owner, req, completion)
            except Exception as exc:  # the answer is still the caller's; only its stored copy is missing
                log.error("storing a completion failed (%s)", type(exc).__name__,
                          extra={"fields": {"request_id": ex.request_id}})  # fmt: skip


def _observe(
    chunk: ChatCompletionChunk, ex: Exchange, assembler: Assembler | None, hide_usage: bool
) -> ChatCompletionChunk | None:
    """Note what a chunk tells (first token, model, usage); the chunk as the client should see it (None:
    a usage chunk the client did not ask for)."""
    if ex.first_token_at is None:
        ex.first_token_at = time.monotonic()
    if assembler is not None:
        assembler.add(chunk)
    ex.model_answered = chunk.model
    ex.streamed_choices += len(chunk.choices)
    if chunk.usage is not None:
        ex.usage = chunk.usage
    if hide_usage:
        if not chunk.choices:
            return None
        chunk.with_usage_field = False
    return chunk


def cost_of(ex: Exchange) -> int:
    """Micro-USD the exchange cost: nothing from the cache or when no deployment answered; else its usage
    at the price of the deployment that answered (for a stream cut short without usage, its delivered
    chunks, a token each, and the request's size in bytes / 4 for the prompt)."""
    if ex.cache == "hit" or ex.deployment is None:
        return 0
    if ex.usage is not None:
        return ex.price.cost(ex.usage.prompt_tokens, ex.usage.completion_tokens)
    return ex.price.cost(ex.body_bytes // 4, ex.streamed_choices)
