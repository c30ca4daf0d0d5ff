"""What travels beside a request through the layers, never mixed into its body."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class RequestContext:
    """Per-request facts the layers below the HTTP edge may need.

    The gateway will add the caller's key, limits and budget reservation here.
    """

    request_id: str
    received_at: float = field(default_factory=time.monotonic)
    attempts: int = 0
    """Upstream attempts made for this request so far (retries and fallbacks included)."""
