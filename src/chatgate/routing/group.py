"""A public model's deployments: health, cooldown and load balancing."""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from chatgate.backends.base import Backend
from chatgate.config import PromptOverheadConfig
from chatgate.errors import UpstreamError
from chatgate.pricing import FREE, Price
from chatgate.protocol import ChatCompletionRequest
from chatgate.routing.prompt import CountsPrompt, upstream_prompt_bound

WINDOW = 60.0


@dataclass(eq=False)
class Deployment:
    """One backend serving a public model, with what the router knows of its health."""

    backend: Backend
    label: str
    """``provider/model`` (or ``local/<id>``): for logs, never containing credentials."""
    weight: float = 1.0
    rpm: int | None = None
    tpm: int | None = None
    price: Price = FREE
    max_output_tokens: int | None = None
    """The most completion tokens it can return, where known (a local model: its context)."""
    local: bool = False
    prompt_overhead: PromptOverheadConfig = field(default_factory=PromptOverheadConfig)
    """What an upstream adds to a request's prompt beyond its bytes (unused where the backend counts)."""
    in_flight: int = 0
    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    recent: deque[tuple[float, int]] = field(default_factory=deque)
    """(time, tokens) of requests sent in the last minute, for the rpm/tpm capacity."""

    def prompt_bound(self, req: ChatCompletionRequest, body_bytes: int) -> int:
        """The most prompt tokens ``req`` (a body of ``body_bytes``) can be charged here."""
        if isinstance(self.backend, CountsPrompt):
            return self.backend.prompt_bound(req)
        return upstream_prompt_bound(req, body_bytes, self.prompt_overhead)

    def cooling(self, now: float) -> bool:
        return now < self.cooldown_until

    def at_capacity(self, now: float) -> bool:
        while self.recent and self.recent[0][0] <= now - WINDOW:
            self.recent.popleft()
        if self.rpm is not None and len(self.recent) >= self.rpm:
            return True
        return self.tpm is not None and sum(t for _, t in self.recent) >= self.tpm

    def record_request(self, now: float) -> None:
        if self.rpm is not None or self.tpm is not None:
            self.recent.append((now, 0))

    def record_tokens(self, tokens: int) -> None:
        """Add a finished request's tokens to its entry in the window."""
        if self.tpm is not None and self.recent:
            when, counted = self.recent[-1]
            self.recent[-1] = (when, counted + tokens)

    def free_in(self, now: float) -> float:
        """Seconds until the oldest request of the window leaves it."""
        return max(0.0, self.recent[0][0] + WINDOW - now) if self.recent else 0.0


@dataclass(eq=False)
class ModelGroup:
    """Every deployment of one public model, how to choose among them and how hard to retry."""

    name: str
    deployments: list[Deployment]
    fallbacks: list[str] = field(default_factory=list)
    balancing: Literal["weighted", "least_busy"] = "weighted"
    retries: int = 2
    cooldown_seconds: float = 30.0
    allowed_fails: int = 3
    vision: bool = True
    rng: random.Random = field(default_factory=random.Random)  # balancing, not secrecy

    def pick(self, exclude: set[Deployment] | None = None) -> Deployment:
        """A deployment with capacity left that is not cooling down (all those with capacity if every
        one is), balanced; a retryable 429 when every deployment is at its rpm/tpm capacity."""
        now = time.monotonic()
        open_ = [d for d in self.deployments if not d.at_capacity(now)]
        if not open_:
            wait = min(d.free_in(now) for d in self.deployments)
            raise UpstreamError(f"Every deployment of '{self.name}' is at its requests- or tokens-per-minute "
                                "capacity.", status=429, type="requests", code="rate_limit_exceeded",
                                retryable=True, retry_after=wait)  # fmt: skip
        picked = self._balance(open_, now, exclude)
        picked.record_request(now)
        return picked

    def _balance(self, candidates: list[Deployment], now: float, exclude: set[Deployment] | None) -> Deployment:
        pool = [d for d in candidates if not d.cooling(now) and d not in (exclude or set())]
        if not pool:
            pool = [d for d in candidates if d not in (exclude or set())] or candidates
        if self.balancing == "least_busy":
            fewest = min(d.in_flight for d in pool)
            return self.rng.choice([d for d in pool if d.in_flight == fewest])
        return self.rng.choices(pool, weights=[d.weight for d in pool])[0]

    def succeeded(self, deployment: Deployment) -> None:
        deployment.consecutive_failures = 0
        deployment.cooldown_until = 0.0

    def failed(self, deployment: Deployment) -> None:
        deployment.consecutive_failures += 1
        if deployment.consecutive_failures >= self.allowed_fails:
            deployment.cooldown_until = time.monotonic() + self.cooldown_seconds
