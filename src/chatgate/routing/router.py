"""The Router: model names to deployments, with retries, cooldowns, balancing and fallbacks. It is
itself a Backend.

A name resolves, in order: a configured model (local id or upstream model name); ``local/<id>``;
an alias; a ``provider/model`` of a configured provider, routed directly. Anything else is a 404.
Direct routes are built on first use and kept in a least-recently-used cache of ``direct_routes``
entries (they share the pooled HTTP clients, so an evicted route costs only its rebuilding); a name
whose provider is not configured is refused without building or caching anything.

A caller whose key may use only some models (``Exchange.allowed_models``) reaches only those:
a ``fallback_models`` entry it may not use is a 404 ``model_not_found`` naming it, before any attempt;
a configured fallback it may not use is left out of its chain.

A request is tried on its model, then on each fallback (the model's configured ones, then the
request's ``fallback_models``), each with up to ``retries`` retries on retryable upstream errors
(connection errors, timeouts, 408, 429, 5xx), waiting as the provider's ``retry-after`` asks or with
exponential backoff and jitter. A context-window error moves straight to the next fallback; any
other client error (400, auth) is final. A stream is retried only until its first chunk: once
tokens went out, a failure ends the stream with an error event, never a silent restart elsewhere.
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeVar

from chatgate.errors import ModelNotFoundError, UnsupportedParameterError, UpstreamError
from chatgate.exchange import Exchange
from chatgate.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model
from chatgate.routing.group import Deployment, ModelGroup
from chatgate.routing.retry import backoff

T = TypeVar("T")
DirectRoute = Callable[[str, str], ModelGroup | None]


class Router:
    def __init__(
        self,
        groups: Mapping[str, ModelGroup],
        aliases: Mapping[str, str],
        *,
        local: set[str],
        direct: DirectRoute | None = None,
        backoff_base: float = 0.5,
        direct_routes: int = 256,
    ) -> None:
        self._groups = dict(groups)
        self._aliases = dict(aliases)
        self._local = set(local)
        self._direct = direct
        self._direct_groups: OrderedDict[str, ModelGroup] = OrderedDict()
        self._direct_limit = direct_routes
        self._backoff_base = backoff_base
        self._rng = random.Random()  # noqa: S311  (jitter, not secrecy)

    def resolve(self, name: str) -> ModelGroup:
        """The group that ``name`` designates."""
        if name in self._groups:
            return self._groups[name]
        if name.startswith("local/") and name[len("local/") :] in self._local:
            return self._groups[name[len("local/") :]]
        target = self._aliases.get(name)
        if target is not None and target in self._groups:
            return self._groups[target]
        if "/" in name and self._direct is not None:
            return self._direct_route(name, self._direct)
        raise ModelNotFoundError(name)

    def _direct_route(self, name: str, build: DirectRoute) -> ModelGroup:
        """The cached direct route of ``provider/model``, built (and the least recently used one
        evicted) on a miss."""
        group = self._direct_groups.get(name)
        if group is not None:
            self._direct_groups.move_to_end(name)
            return group
        provider, model = name.split("/", 1)
        group = build(provider, model)
        if group is None:
            raise ModelNotFoundError(name)
        self._direct_groups[name] = group
        while len(self._direct_groups) > self._direct_limit:
            self._direct_groups.popitem(last=False)
        return group

    @property
    def direct_routes_cached(self) -> int:
        """How many ``provider/model`` routes are cached now (at most ``direct_routes``)."""
        return len(self._direct_groups)

    # --- Backend -------------------------------------------------------------------------------

    async def complete(self, req: ChatCompletionRequest, ctx: Exchange) -> ChatCompletion:
        async def once(group: ModelGroup, deployment: Deployment) -> ChatCompletion:
            deployment.in_flight += 1
            try:
                result = await deployment.backend.complete(req, ctx)
            finally:
                deployment.in_flight -= 1
            result.model = group.name
            if result.usage is not None:
                deployment.record_tokens(result.usage.total_tokens)
            return result

        return await self._attempts(req, ctx, once)

    def stream(self, req: ChatCompletionRequest, ctx: Exchange) -> AsyncIterator[ChatCompletionChunk]:
        self._chain(req, ctx)  # an unknown or forbidden model is a 404 before anything streams
        return self._stream(req, ctx)

    async def _stream(self, req: ChatCompletionRequest, ctx: Exchange) -> AsyncIterator[ChatCompletionChunk]:
        async def first(group: ModelGroup, deployment: Deployment) -> tuple[str, AsyncIterator[ChatCompletionChunk]]:
            chunks = deployment.backend.stream(req, ctx)
            try:
                head = await anext(chunks)
            except BaseException:
                await _close(chunks)
                raise
            head.model = group.name
            return group.name, _prepend(head, chunks, group.name, deployment)

        _, chunks = await self._attempts(req, ctx, first)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await _close(chunks)

    def deployments(self, req: ChatCompletionRequest, ctx: Exchange) -> list[Deployment]:
        """Every deployment that might answer ``req`` for this caller (its model's and its fallbacks')."""
        return [d for group in self._chain(req, ctx) for d in group.deployments]

    def models(self) -> list[Model]:
        out: list[Model] = []
        for name, group in self._groups.items():
            created = min((m.created for d in group.deployments for m in d.backend.models()), default=0)
            out.append(Model(id=name, created=created, owned_by="chatgate"))
        created_by = {m.id: m.created for m in out}
        out += [Model(id=a, created=created_by.get(t, 0), owned_by="chatgate") for a, t in self._aliases.items()
                if t in created_by]  # fmt: skip
        return out

    def model(self, name: str) -> Model:
        group = self.resolve(name)
        created = min((m.created for d in group.deployments for m in d.backend.models()), default=0)
        return Model(id=name, created=created, owned_by="chatgate")

    # --- attempts ----------------------------------------------------------------------------

    def _chain(self, req: ChatCompletionRequest, ctx: Exchange) -> list[ModelGroup]:
        """The model and its fallbacks, in order, less the configured fallbacks the caller may not use
        and those that cannot take the request's images; 404 for a requested name it may not use."""
        allowed = ctx.allowed_models
        for asked in (req.model, *(req.fallback_models or [])):
            if allowed is not None and asked not in allowed:
                raise ModelNotFoundError(asked)
        first = self.resolve(req.model)
        configured = [n for n in first.fallbacks if allowed is None or n in allowed]
        names = [*configured, *(req.fallback_models or [])]
        chain = [first]
        for name in names:
            group = self.resolve(name)
            if group not in chain:
                chain.append(group)
        if _has_images(req):
            able = [g for g in chain if g.vision]
            if not able:
                raise UnsupportedParameterError(
                    f"Model '{first.name}' does not support image input; send text content only.",
                    param="messages",
                    code="unsupported_content",
                )
            chain = able
        return chain

    async def _attempts(
        self,
        req: ChatCompletionRequest,
        ctx: Exchange,
        once: Callable[[ModelGroup, Deployment], Awaitable[T]],
    ) -> T:
        last: UpstreamError | None = None
        chain = self._chain(req, ctx)
        for group in chain:
            retries = req.retries if req.retries is not None else group.retries
            tried: set[Deployment] = set()
            for attempt in range(retries + 1):
                deployment: Deployment | None = None
                try:
                    deployment = group.pick(exclude=tried)
                    ctx.attempts += 1
                    result = await _within(once(group, deployment), req.timeout, deployment.label)
                except UpstreamError as exc:
                    last = exc
                    if deployment is None and group is not chain[-1]:
                        break  # every deployment at capacity: the next fallback rather than waiting
                    if deployment is not None:
                        group.failed(deployment)
                        tried.add(deployment)
                    if not exc.retryable:
                        break
                    wait = backoff(attempt, exc.retry_after, self._backoff_base, self._rng)
                    if wait is None or attempt == retries:
                        break
                    await asyncio.sleep(wait)
                    continue
                assert deployment is not None
                group.succeeded(deployment)
                ctx.deployment, ctx.price = deployment.label, deployment.price
                return result
            if last is not None and not (last.retryable or last.context_window):
                raise last
        assert last is not None  # the chain always holds at least one group
        raise last


def _has_images(req: ChatCompletionRequest) -> bool:
    return any(isinstance(m.content, list) and any(p.type == "image_url" for p in m.content) for m in req.messages)


async def _within(work: Awaitable[T], seconds: float | None, label: str) -> T:
    if seconds is None:
        return await work
    try:
        return await asyncio.wait_for(work, seconds)
    except TimeoutError:
        raise UpstreamError(f"The model deployment '{label}' did not answer within {seconds:g} s.", status=504,
                            type="timeout", code="upstream_timeout", retryable=True) from None  # fmt: skip


async def _prepend(
    head: ChatCompletionChunk, rest: AsyncIterator[ChatCompletionChunk], name: str, deployment: Deployment
) -> AsyncIterator[ChatCompletionChunk]:
    deployment.in_flight += 1
    try:
        yield head
        async for chunk in rest:
            chunk.model = name
            if chunk.usage is not None:
                deployment.record_tokens(chunk.usage.total_tokens)
            yield chunk
    finally:
        deployment.in_flight -= 1
        await _close(rest)


async def _close(chunks: AsyncIterator[ChatCompletionChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
