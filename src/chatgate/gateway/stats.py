"""The gateway's counters, kept from the same ended exchanges as the ledger rows, for ``/metrics``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from chatgate.exchange import Exchange


@dataclass
class GatewayStats:
    """Totals since start, per (endpoint, status) and per (endpoint, model)."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Per (endpoint, error type)."""
    prompt_tokens: Counter[tuple[str, str]] = field(default_factory=Counter)
    completion_tokens: Counter[tuple[str, str]] = field(default_factory=Counter)
    cost: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Micro-USD charged."""
    cache_hits: Counter[str] = field(default_factory=Counter)
    upstream_attempts: Counter[str] = field(default_factory=Counter)
    disconnects: Counter[str] = field(default_factory=Counter)

    def observe(self, ex: Exchange) -> None:
        endpoint = ex.endpoint
        self.requests[endpoint, ex.status] += 1
        if ex.error_type is not None:
            self.errors[endpoint, ex.error_type] += 1
        model = ex.model or ""
        if ex.usage is not None:
            self.prompt_tokens[endpoint, model] += ex.usage.prompt_tokens
            self.completion_tokens[endpoint, model] += ex.usage.completion_tokens
        if ex.cost:
            self.cost[endpoint, model] += ex.cost
        if ex.cache == "hit":
            self.cache_hits[endpoint] += 1
        if ex.attempts:
            self.upstream_attempts[endpoint] += ex.attempts
        if ex.disconnected:
            self.disconnects[endpoint] += 1
