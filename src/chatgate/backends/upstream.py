"""What every upstream provider backend shares: its settings, the HTTP client, and error mapping.

A provider backend translates chatgate's protocol models to the provider's wire format and back,
and raises :class:`UpstreamError` (a :class:`~chatgate.errors.ChatgateError`) for anything the
provider answered with an error or failed to answer at all. ``retryable`` tells the router whether
another attempt (or a fallback) may succeed; ``retry_after`` carries the provider's hint.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx

from chatgate.errors import ChatgateError

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class UpstreamConfig:
    """One deployment: which provider, which of its models, where, and with which key."""

    provider: str
    """Preset name (``openai``, ``anthropic``, ``gemini``, ``groq``, …) or ``openai_compatible``."""
    model: str
    """The provider's own model name."""
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 600.0
    headers: tuple[tuple[str, str], ...] = ()


class UpstreamError(ChatgateError):
    """An upstream provider failed; ``status`` is what the client sees (OpenAI's mapping)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str = "upstream_error",
        code: str | None = None,
        param: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        context_window: bool = False,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.status = status  # type: ignore[misc]  # per instance, unlike the class-level default
        self.type = type  # type: ignore[misc]
        self.retryable = status in RETRYABLE_STATUS if retryable is None else retryable
        self.retry_after = retry_after
        self.context_window = context_window

    def headers(self) -> dict[str, str]:
        if self.retry_after is not None and self.status == 429:
            return {"retry-after": str(max(1, round(self.retry_after)))}
        return {}


def connection_error(exc: BaseException, provider: str) -> UpstreamError:
    """A transport failure (refused, reset, timed out) as a retryable 502/504."""
    if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamError(f"The upstream provider '{provider}' timed out.", status=504, type="timeout",
                             code="upstream_timeout", retryable=True)  # fmt: skip
    return UpstreamError(f"Could not reach the upstream provider '{provider}'.", status=502,
                         type="upstream_error", code="upstream_unreachable", retryable=True)  # fmt: skip


def auth_rejected(provider: str, status: int) -> UpstreamError:
    """The provider refused chatgate's own credentials: a final 502, never blamed on the client's key."""
    return UpstreamError(f"The upstream provider '{provider}' rejected chatgate's credentials ({status}).",
                         status=502, type="upstream_auth_error", code="upstream_auth_failed",
                         retryable=False)  # fmt: skip


def redact(message: str, secret: str | None) -> str:
    """``message`` with ``secret`` (an upstream key a provider may echo) masked."""
    return message.replace(secret, "[redacted]") if secret else message


async def send_streaming(client: httpx.AsyncClient, request: httpx.Request, provider: str) -> httpx.Response:
    """Send ``request`` for a streamed answer; transport failures become retryable UpstreamErrors."""
    try:
        return await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise connection_error(exc, provider) from None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def error_message(body: Any, fallback: str) -> tuple[str, str | None, str | None]:
    """(message, type, code) from a provider's JSON error body, whatever its exact shape."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            message = err.get("message") or fallback
            return str(message), _str(err.get("type") or err.get("status")), _str(err.get("code"))
        if isinstance(err, str):
            return err, None, None
    return fallback, None, None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def new_client(max_connections: int = 256) -> httpx.AsyncClient:
    """A pooled keep-alive HTTP client for upstream calls (per-request timeouts are set per call)."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600.0, connect=10.0), follow_redirects=False)


class AioPool:
    """A pooled keep-alive aiohttp session for the hot OpenAI-compatible path, made on first use
    (it must be created inside the event loop that uses it)."""

    def __init__(self, max_connections: int = 256) -> None:
        self._max = max_connections
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max, keepalive_timeout=30, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True, trust_env=False)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
