"""What travels beside a request through the layers, never mixed into its body."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from chatgate.gateway.pricing import FREE, Price


@dataclass
class RequestContext:
    """Per-request facts the layers below the HTTP edge may need, and what they tell the edge back."""

    request_id: str
    received_at: float = field(default_factory=time.monotonic)
    attempts: int = 0
    """Upstream attempts made for this request so far (retries and fallbacks included)."""
    deployment: str | None = None
    """The deployment that answered (``provider/model`` or ``local/<id>``), once one has."""
    price: Price = FREE
    """That deployment's price."""
    first_token_at: float | None = None
    """When the first chunk of a stream was ready (monotonic), for time-to-first-token."""
    allowed_models: frozenset[str] | None = None
    """The model names the caller's key may reach (None: any). The Router holds the whole fallback chain
    to it: a forbidden ``fallback_models`` entry is a 404, a forbidden configured fallback is skipped."""
