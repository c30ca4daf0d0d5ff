"""The typed record of one exchange: a request, what every layer decided about it, and how it ended.

The server opens one per HTTP request; the gateway, the router and the backends fill in what they
decide (who pays, which deployment answered at what price, what was held and charged, the usage),
and when the response has gone out the same record becomes the ledger row, the access-log line and
the gateway's metrics. It travels beside the request, never inside its body, and it is the only
thing that carries request facts between layers (no string-keyed dicts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from chatgate.pricing import FREE, Price
from chatgate.protocol import Usage

Period = Literal["daily", "weekly", "monthly"]
PERIODS: tuple[Period, ...] = ("daily", "weekly", "monthly")

CacheDecision = Literal["off", "miss", "hit"]
"""``off``: caching does not apply; ``miss``: looked up, not found (the answer is kept); ``hit``: served from it."""


@dataclass(frozen=True)
class Grant:
    """What the caller's virtual key allows, as the gateway enforces it (an exchange without one: the
    admin, or open mode)."""

    key_id: str
    models: frozenset[str] | None = None
    """The model names the key may reach, fallbacks included (None: any)."""
    rpm: int | None = None
    tpm: int | None = None
    budget: int | None = None
    """Micro-USD the key may spend per ``period`` (None: no budget)."""
    period: Period | None = None
    cache: bool | None = None
    """The response cache for this key: on, off, or the server's default (None)."""


@dataclass(eq=False)
class Exchange:
    """One request and its outcome. Layers only ever add to it; nothing in it is a secret."""

    request_id: str
    endpoint: str = ""
    """The API surface (``chat.completions``); empty for a request that is not a metered API call."""
    received_at: float = field(default_factory=time.monotonic)
    created_at: float = field(default_factory=time.time)

    # --- who asks, and what (the server) ---------------------------------------------------------
    grant: Grant | None = None
    """The caller's key and its limits (None: the admin or open mode)."""
    model_asked: str | None = None
    stream: bool = False
    body_bytes: int = 0
    cache_asked: bool | None = None
    """The request's ``x-chatgate-cache`` header, when it had one."""

    # --- who answered (the router) ---------------------------------------------------------------
    attempts: int = 0
    """Upstream attempts made so far (retries and fallbacks included)."""
    deployment: str | None = None
    """The deployment that answered (``provider/model`` or ``local/<id>``), once one has."""
    price: Price = FREE
    """That deployment's price."""
    model_answered: str | None = None
    """The model name the answer carries (the group that answered, a fallback maybe)."""

    # --- what it cost (the gateway) --------------------------------------------------------------
    cache: CacheDecision = "off"
    reserved: int = 0
    """Micro-USD held on the key's budget for it (its worst case)."""
    cost: int = 0
    """Micro-USD charged, once settled."""
    usage: Usage | None = None
    streamed_choices: int = 0
    """Choice deltas sent so far (a stream cut before its usage is charged a token each)."""
    ratelimit_headers: dict[str, str] = field(default_factory=dict)
    """The ``x-ratelimit-*`` headers of the key's limits, for every response to this request."""

    # --- how it ended (the server) ---------------------------------------------------------------
    first_token_at: float | None = None
    """When the first chunk of a stream was ready (monotonic)."""
    finished_at: float | None = None
    status: int = 0
    error_type: str | None = None
    disconnected: bool = False

    @property
    def key_id(self) -> str | None:
        return self.grant.key_id if self.grant is not None else None

    @property
    def allowed_models(self) -> frozenset[str] | None:
        """The models the caller may reach (None: any); the Router holds the whole fallback chain to it."""
        return self.grant.models if self.grant is not None else None

    @property
    def owner(self) -> str:
        """Whose stored objects and cache entries these are: the key's id, or ``""`` (admin, open mode)."""
        return self.grant.key_id if self.grant is not None else ""

    @property
    def model(self) -> str | None:
        """The model to report: the one that answered, else the one asked for."""
        return self.model_answered or self.model_asked

    def latency_ms(self) -> int:
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        return round((end - self.received_at) * 1000)

    def ttft_ms(self) -> int | None:
        if self.first_token_at is None:
            return None
        return round((self.first_token_at - self.received_at) * 1000)
