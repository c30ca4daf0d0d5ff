"""A public model's deployments: health, cooldown and load balancing."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Literal

from chatgate.backends.base import Backend


@dataclass(eq=False)
class Deployment:
    """One backend serving a public model, with what the router knows of its health."""

    backend: Backend
    label: str
    """``provider/model`` (or ``local/<id>``): for logs, never containing credentials."""
    weight: float = 1.0
    in_flight: int = 0
    consecutive_failures: int = 0
    cooldown_until: float = 0.0

    def cooling(self, now: float) -> bool:
        return now < self.cooldown_until


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
        """A deployment that is not cooling down (all of them if every one is), balanced."""
        now = time.monotonic()
        pool = [d for d in self.deployments if not d.cooling(now) and d not in (exclude or set())]
        if not pool:
            pool = [d for d in self.deployments if d not in (exclude or set())] or self.deployments
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
