"""Closing async iterators of chunks, whatever produced them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any


async def aclose(chunks: AsyncIterator[Any]) -> None:
    """Close an async generator, so that its ``finally`` runs now (a no-op for other iterators); what that
    ``finally`` raises is not the caller's concern (it is logged where it happened)."""
    close = getattr(chunks, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()
