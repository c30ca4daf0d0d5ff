"""The most a request can cost: what a budgeted key holds before the request is routed.

The worst case bounds the prompt each deployment that might answer will really count (see
``Deployment.prompt_bound``) plus the completion: ``max_tokens`` (or ``max_completion_tokens``) times
``n``, else a deployment's own bound (a local model's context, an upstream's ``max_output_tokens``),
else ``reserve_max_tokens`` — to which the request is then capped on upstream models, where nothing
else would bound the answer — at the dearest price of the model's deployments and fallbacks.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatgate.exchange import Exchange
from chatgate.protocol import ChatCompletionRequest
from chatgate.protocol.limits import sized
from chatgate.routing import Router
from chatgate.routing.group import Deployment


@dataclass(frozen=True)
class WorstCase:
    amount: int
    """Micro-USD."""
    request: ChatCompletionRequest
    """The request to route: ``req``, its completion capped where nothing else bounds it."""


async def worst_case(req: ChatCompletionRequest, ex: Exchange, router: Router, reserve_max_tokens: int) -> WorstCase:
    """The worst case of ``req`` for this caller (a 404 for a model or fallback it may not reach)."""
    deployments = router.deployments(req, ex)
    limit = req.completion_limit()
    unbounded = any(d.max_output_tokens is None for d in deployments)
    if limit is None and unbounded and not any(d.local for d in deployments):
        limit = reserve_max_tokens  # an upstream could otherwise answer at any length: cap it
        req = req.model_copy(update={"max_completion_tokens": limit})

    def most() -> int:  # a local deployment renders the prompt: off the event loop when it is large
        return max((_cost(d, req, ex.body_bytes, limit, reserve_max_tokens) for d in deployments), default=0)

    return WorstCase(await sized(most, ex.body_bytes), req)


def _cost(d: Deployment, req: ChatCompletionRequest, body_bytes: int, limit: int | None, fallback: int) -> int:
    bounds = [x for x in (limit, d.max_output_tokens) if x is not None]
    out = min(bounds) if bounds else fallback
    return d.price.cost(d.prompt_bound(req, body_bytes), out * req.choices())
