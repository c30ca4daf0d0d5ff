"""Any OpenAI-compatible upstream (OpenAI, Groq, Mistral, Together, DeepSeek, OpenRouter, Ollama,
vLLM, llama.cpp's llama-server, or any ``base_url``): requests pass through in OpenAI's format,
less the fields a provider is known to reject; responses and streams are read into chatgate's
protocol models; errors become :class:`UpstreamError`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from pydantic import ValidationError

from chatgate.backends.upstream import AioPool, UpstreamConfig
from chatgate.backends.upstream_errors import (
    OPENAI,
    connection_error,
    malformed,
    map_error,
    map_event_error,
    stream_cut,
)
from chatgate.errors import UpstreamError
from chatgate.exchange import Exchange
from chatgate.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model

ROUTING_FIELDS = frozenset({"fallback_models", "retries", "timeout"})
"""chatgate's own per-request routing fields: never forwarded."""
EXTENSIONS = frozenset({"top_k", "min_p", "repetition_penalty"})
"""chatgate's sampling extensions: forwarded only to servers that take them (vLLM, llama.cpp, Ollama)."""


class OpenAICompatBackend:
    """One deployment on an OpenAI-compatible server (aiohttp: the proxy's hot path)."""

    def __init__(
        self, config: UpstreamConfig, pool: AioPool, *, rejected: frozenset[str] = frozenset(), extensions: bool = False
    ) -> None:
        """``rejected``: request fields this provider answers with a 400, dropped rather than forwarded;
        ``extensions``: the server takes chatgate's sampling extensions (top_k, min_p, …)."""
        self.config = config
        self.pool = pool
        self._exclude = ROUTING_FIELDS | rejected | (frozenset() if extensions else EXTENSIONS)
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self._headers = {**dict(config.headers), "Content-Type": "application/json"}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"

    def models(self) -> list[Model]:
        return [Model(id=f"{self.config.provider}/{self.config.model}", created=0, owned_by=self.config.provider)]

    def body(self, req: ChatCompletionRequest, *, stream: bool) -> dict[str, Any]:
        body = req.model_dump(mode="json", exclude_none=True, by_alias=True, exclude=set(self._exclude))
        body["model"] = self.config.model
        body["stream"] = stream
        if not stream:
            body.pop("stream_options", None)
        return body

    async def complete(self, req: ChatCompletionRequest, ctx: Exchange) -> ChatCompletion:
        data = json.dumps(self.body(req, stream=False)).encode()
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        try:
            async with self.pool.session().post(self.url, data=data, headers=self._headers, timeout=timeout) as r:
                raw = await r.read()
                status, headers = r.status, r.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise connection_error(exc, self.config.provider) from None
        if status >= 400:
            raise self._error(status, raw, headers)
        try:
            return ChatCompletion.model_validate_json(raw)
        except ValidationError:
            raise malformed(self.config.provider) from None

    async def stream(self, req: ChatCompletionRequest, ctx: Exchange) -> AsyncIterator[ChatCompletionChunk]:
        data = json.dumps(self.body(req, stream=True)).encode()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.config.timeout)
        try:
            response = await self.pool.session().post(self.url, data=data, headers=self._headers, timeout=timeout)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise connection_error(exc, self.config.provider) from None
        try:
            if response.status >= 400:
                raise self._error(response.status, await response.read(), response.headers)
            async for chunk in self._chunks(response):
                yield chunk
        finally:
            response.close()

    def _error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> UpstreamError:
        return map_error(status, _json(raw), headers, self.config.provider, self.config.api_key, dialect=OPENAI)

    async def _chunks(self, response: aiohttp.ClientResponse) -> AsyncIterator[ChatCompletionChunk]:
        """Chunks until ``[DONE]``. A failure is retryable only while no chunk has been yielded."""
        provider, started = self.config.provider, False
        try:
            async for raw in response.content:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    chunk = parse_chunk(data, provider, self.config.api_key)
                except UpstreamError as exc:
                    exc.retryable = exc.retryable and not started
                    raise
                started = True
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise stream_cut(provider, retryable=False) from exc
        raise stream_cut(provider, retryable=False)


def parse_chunk(data: str, provider: str, api_key: str | None) -> ChatCompletionChunk:
    """One ``data:`` event; an ``{"error": …}`` event raises, with ``api_key`` masked in it."""
    try:
        event = json.loads(data)
    except ValueError:
        raise malformed(provider) from None
    if isinstance(event, dict) and "error" in event:
        raise map_event_error(event, provider, api_key, dialect=OPENAI)
    try:
        return ChatCompletionChunk.model_validate(event)
    except ValidationError:
        raise malformed(provider) from None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
