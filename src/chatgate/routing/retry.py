"""How long to wait before the next attempt."""

from __future__ import annotations

import random

MAX_RETRY_AFTER = 60.0
"""A provider asking for a longer pause than this is not waited for: the next fallback is tried."""


def backoff(attempt: int, retry_after: float | None, base: float, rng: random.Random) -> float | None:
    """Seconds before attempt ``attempt + 1``: the provider's ``retry-after`` when it gave one,
    else exponential backoff with jitter; ``None`` when waiting is pointless."""
    if retry_after is not None:
        return retry_after if retry_after <= MAX_RETRY_AFTER else None
    delay = min(base * float(2**attempt), 8.0)
    return delay + rng.uniform(0, delay / 4)
