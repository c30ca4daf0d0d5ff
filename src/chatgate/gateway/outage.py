"""Redis away, handled once for everything that uses it (rate-limit counters, the response cache):
after a failure the caller skips Redis for ``retry_seconds`` and works without it; one warning line
per outage (the exception's type, never the URL, which may carry a password), one when Redis is back.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError

log = logging.getLogger("chatgate.gateway")

RETRY_SECONDS = 5.0
"""How long a replica works without Redis after it failed, before trying it again."""

FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
"""What Redis away looks like: refused, reset, or silent past the client's socket timeout."""


class Outage:
    """Whether ``what`` (a Redis user) should try Redis now, and the log lines of its outages."""

    def __init__(self, what: str, fallback: str, retry_seconds: float = RETRY_SECONDS) -> None:
        self.what = what
        self.fallback = fallback
        self.retry_seconds = retry_seconds
        self._until: float | None = None

    def skipping(self) -> bool:
        """True while Redis failed less than ``retry_seconds`` ago."""
        return self._until is not None and time.monotonic() < self._until

    def failed(self, exc: BaseException) -> None:
        if self._until is None:  # one line per outage, not one per request
            log.warning("%s: Redis unreachable (%s); %s, retrying Redis every %g s",
                        self.what, type(exc).__name__, self.fallback, self.retry_seconds)  # fmt: skip
        self._until = time.monotonic() + self.retry_seconds

    def succeeded(self) -> None:
        if self._until is not None:
            self._until = None
            log.info("%s: Redis is back", self.what)
