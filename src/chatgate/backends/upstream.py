"""What every upstream provider backend shares: its settings and the pooled HTTP clients.

A provider backend translates chatgate's protocol models to the provider's wire format and back,
and raises :class:`~chatgate.errors.UpstreamError` (built by
:mod:`chatgate.backends.upstream_errors`) for anything the provider answered with an error or
failed to answer at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
import httpx

from chatgate.backends.upstream_errors import connection_error


@dataclass(frozen=True)
class UpstreamConfig:
    """One deployment: which provider, which of its models, where, and with which key."""

    provider: str
    """The provider's name (``openai``, ``anthropic``, ``gemini``, ``groq``, or one of the config's)."""
    model: str
    """The provider's own model name."""
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 600.0
    headers: tuple[tuple[str, str], ...] = ()


async def send_streaming(client: httpx.AsyncClient, request: httpx.Request, provider: str) -> httpx.Response:
    """Send ``request`` for a streamed answer; transport failures become retryable UpstreamErrors."""
    try:
        return await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise connection_error(exc, provider) from None


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


@dataclass
class UpstreamClients:
    """The pooled HTTP clients upstream backends share: aiohttp for OpenAI-compatible servers (the
    hot path), httpx for Anthropic and Gemini."""

    httpx: httpx.AsyncClient
    aio: AioPool

    @classmethod
    def create(cls) -> UpstreamClients:
        return cls(httpx=new_client(), aio=AioPool())

    async def aclose(self) -> None:
        await self.httpx.aclose()
        await self.aio.aclose()
