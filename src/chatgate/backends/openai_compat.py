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

from chatgate.backends.upstream import (
    AioPool,
    UpstreamConfig,
    UpstreamError,
    auth_rejected,
    connection_error,
    error_message,
    redact,
    retry_after,
)
from chatgate.exchange import Exchange
from chatgate.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model

PRESETS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "together": "https://api.together.xyz/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "ollama": "http://127.0.0.1:11434/v1",
    "vllm": "http://127.0.0.1:8000/v1",
    "llamacpp": "http://127.0.0.1:8080/v1",
}
KEY_ENV: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "groq": "GROQ_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "together": "TOGETHER_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
}
REJECTED: dict[str, frozenset[str]] = {
    # fields these providers answer with a 400; dropped rather than forwarded
    "groq": frozenset({"logit_bias", "logprobs", "top_logprobs", "n", "store", "metadata", "service_tier"}),
    "mistral": frozenset({"logit_bias", "logprobs", "top_logprobs", "user", "store", "metadata", "service_tier"}),
    "deepseek": frozenset({"logit_bias", "store", "metadata", "service_tier"}),
}
CHATGATE_FIELDS = frozenset({"fallback_models", "retries", "timeout", "top_k", "min_p", "repetition_penalty"})
LOCAL_SERVERS = frozenset({"ollama", "vllm", "llamacpp", "openai_compatible"})


class OpenAICompatBackend:
    """One deployment on an OpenAI-compatible server (aiohttp: the proxy's hot path)."""

    def __init__(self, config: UpstreamConfig, pool: AioPool) -> None:
        self.config = config
        self.pool = pool
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self._headers = {**dict(config.headers), "Content-Type": "application/json"}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"

    def models(self) -> list[Model]:
        return [Model(id=f"{self.config.provider}/{self.config.model}", created=0, owned_by=self.config.provider)]

    def body(self, req: ChatCompletionRequest, *, stream: bool) -> dict[str, Any]:
        exclude = set(
            CHATGATE_FIELDS if self.config.provider not in LOCAL_SERVERS else {"fallback_models", "retries", "timeout"}
        )
        exclude |= REJECTED.get(self.config.provider, frozenset())
        body = req.model_dump(mode="json", exclude_none=True, by_alias=True, exclude=exclude)
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
            raise map_error(status, _json(raw), headers, self.config.provider, self.config.api_key)
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
                raw = await response.read()
                raise map_error(response.status, _json(raw), response.headers, self.config.provider)
            async for chunk in self._chunks(response):
                yield chunk
        finally:
            response.close()

    async def _chunks(self, response: aiohttp.ClientResponse) -> AsyncIterator[ChatCompletionChunk]:
        done = False
        try:
            async for raw in response.content:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                yield parse_chunk(data, self.config.provider)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"The upstream provider '{self.config.provider}' ended the stream early.",
                                status=502, code="upstream_stream_cut", retryable=False) from exc  # fmt: skip
        if not done:
            raise UpstreamError(f"The upstream provider '{self.config.provider}' ended the stream early.",
                                status=502, code="upstream_stream_cut", retryable=False)  # fmt: skip


def parse_chunk(data: str, provider: str) -> ChatCompletionChunk:
    try:
        event = json.loads(data)
    except ValueError:
        raise malformed(provider) from None
    if isinstance(event, dict) and "error" in event:
        message, type_, code = error_message(event, "The upstream provider failed mid-stream.")
        raise UpstreamError(message, status=502, type=type_ or "upstream_error", code=code, retryable=False)
    try:
        return ChatCompletionChunk.model_validate(event)
    except ValidationError:
        raise malformed(provider) from None


def malformed(provider: str) -> UpstreamError:
    return UpstreamError(f"The upstream provider '{provider}' sent a malformed response.", status=502,
                         code="upstream_malformed_response", retryable=True)  # fmt: skip


def map_error(
    status: int, body: Any, headers: Mapping[str, str], provider: str, api_key: str | None = None
) -> UpstreamError:
    """An upstream error response, as the client should see it (chatgate's key masked if echoed)."""
    message, type_, code = error_message(body, f"The upstream provider '{provider}' answered {status}.")
    message = redact(message, api_key)
    wait = retry_after(headers)
    if status in (401, 403):
        return auth_rejected(provider, status)
    if status == 429:
        return UpstreamError(message, status=429, type=type_ or "requests", code=code or "rate_limit_exceeded",
                             retry_after=wait)  # fmt: skip
    context = code == "context_length_exceeded"
    if status < 500:
        return UpstreamError(message, status=status, type=type_ or "invalid_request_error", code=code,
                             retryable=status in (408, 409), context_window=context)  # fmt: skip
    return UpstreamError(message, status=status, type=type_ or "server_error", code=code, retry_after=wait)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
