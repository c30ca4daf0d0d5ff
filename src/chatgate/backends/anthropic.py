"""Anthropic's Messages API (``POST /v1/messages``) behind chatgate's OpenAI-format protocol.

The request and response translation lives in :mod:`chatgate.backends.anthropic_translate`; this
module sends requests, reads Anthropic's event stream into chat completion chunks, and maps
errors with the shared mapper (:data:`chatgate.backends.upstream_errors.ANTHROPIC`): 529
``overloaded_error`` is a retryable 503, 401/403 mean chatgate's own key was refused (a 502
``upstream_auth_error``), 413 is a 400.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ValidationError

from chatgate.backends.anthropic_translate import JSON_TOOL, Plan, completion, request_body, usage
from chatgate.backends.upstream import UpstreamConfig, send_streaming
from chatgate.backends.upstream_errors import (
    ANTHROPIC,
    connection_error,
    malformed,
    map_error,
    map_event_error,
    stream_cut,
)
from chatgate.errors import UpstreamError
from chatgate.exchange import Exchange
from chatgate.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    Delta,
    FinishReason,
    Model,
)
from chatgate.protocol.responses import ToolCallDelta

API_VERSION = "2023-06-01"
_BAD_SHAPE = (KeyError, TypeError, ValueError, AttributeError, ValidationError)


class AnthropicBackend:
    """One deployment of an Anthropic model."""

    def __init__(self, config: UpstreamConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client
        base = config.base_url.rstrip("/")
        self.url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")

    def models(self) -> list[Model]:
        return [Model(id=f"{self.config.provider}/{self.config.model}", created=0, owned_by=self.config.provider)]

    def _headers(self) -> dict[str, str]:
        headers = dict(self.config.headers)
        headers["anthropic-version"] = API_VERSION
        if self.config.api_key:
            headers["x-api-key"] = self.config.api_key
        return headers

    def _error(self, response: httpx.Response) -> UpstreamError:
        return map_error(response.status_code, _json(response), response.headers, self.config.provider,
                         self.config.api_key, dialect=ANTHROPIC)  # fmt: skip

    async def complete(self, req: ChatCompletionRequest, ctx: Exchange) -> ChatCompletion:
        body, plan = request_body(req, self.config.model, stream=False)
        try:
            response = await self.client.post(self.url, json=body, headers=self._headers(),
                                              timeout=self.config.timeout)  # fmt: skip
        except httpx.HTTPError as exc:
            raise connection_error(exc, self.config.provider) from None
        if response.status_code >= 400:
            raise self._error(response)
        try:
            return completion(response.json(), plan, self.config.model)
        except _BAD_SHAPE:
            raise malformed(self.config.provider) from None

    async def stream(self, req: ChatCompletionRequest, ctx: Exchange) -> AsyncIterator[ChatCompletionChunk]:
        body, plan = request_body(req, self.config.model, stream=True)
        request = self.client.build_request("POST", self.url, json=body, headers=self._headers(),
                                            timeout=self.config.timeout)  # fmt: skip
        response = await send_streaming(self.client, request, self.config.provider)
        try:
            if response.status_code >= 400:
                await response.aread()
                raise self._error(response)
            reader = StreamReader(plan, self.config.model, req.wants_usage_chunk(), self.config.provider,
                                  self.config.api_key)  # fmt: skip
            async for chunk in self._chunks(response, reader):
                yield chunk
        finally:
            await response.aclose()

    async def _chunks(self, response: httpx.Response, reader: StreamReader) -> AsyncIterator[ChatCompletionChunk]:
        """Chunks until ``message_stop``. A failure is retryable only while no chunk has been yielded."""
        provider = self.config.provider
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # "event:" lines repeat the type that the data carries
                try:
                    chunks = reader.feed(json.loads(line[5:]))
                except _BAD_SHAPE:
                    raise reader.unless_started(malformed(provider)) from None
                for chunk in chunks:
                    yield chunk
                if reader.done:
                    return
        except httpx.TimeoutException as exc:
            raise reader.unless_started(connection_error(exc, provider)) from None
        except httpx.HTTPError:
            pass  # the connection dropped: a cut stream, below
        raise stream_cut(provider, retryable=not reader.started)


@dataclass
class StreamReader:
    """Anthropic's stream events in, chat completion chunks out.

    The first chunk (which carries the role) waits for the first content, so that an ``error``
    event right after ``message_start`` (an overload, say) still fails before any chunk.
    """

    plan: Plan
    model: str
    include_usage: bool
    provider: str
    secret: str | None = field(default=None, repr=False)
    """chatgate's key, scrubbed from error messages."""
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    started: bool = False
    done: bool = False
    tool_index: dict[int, int] = field(default_factory=dict)
    """Anthropic's content block index -> OpenAI's tool-call index."""
    json_blocks: set[int] = field(default_factory=set)
    usage: dict[str, Any] = field(default_factory=dict)
    called: bool = False

    def feed(self, event: dict[str, Any]) -> list[ChatCompletionChunk]:
        kind = event["type"]
        if kind == "message_start":
            message = event["message"]
            self.id, self.model = str(message["id"]), str(message.get("model") or self.model)
            self.usage.update(message.get("usage") or {})
        elif kind == "content_block_start":
            return self._block_start(int(event["index"]), event["content_block"])
        elif kind == "content_block_delta":
            return self._block_delta(int(event["index"]), event["delta"])
        elif kind == "message_delta":
            self.usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            reason = self.plan.finish_reason(event["delta"].get("stop_reason"), called=self.called)
            return [self._chunk(Delta(), finish=reason)]
        elif kind == "message_stop":
            self.done = True
            if self.include_usage:
                return [self._usage_chunk()]
        elif kind == "error":
            raise self._error(event)
        return []  # ping, content_block_stop, and event types added later

    def _error(self, event: dict[str, Any]) -> UpstreamError:
        """An ``error`` event, as its type says."""
        return self.unless_started(map_event_error(event, self.provider, self.secret, dialect=ANTHROPIC))

    def unless_started(self, error: UpstreamError) -> UpstreamError:
        """``error``, no longer retryable once a chunk has reached the client."""
        if self.started:
            error.retryable = False
        return error

    def _block_start(self, index: int, block: dict[str, Any]) -> list[ChatCompletionChunk]:
        if block["type"] == "text" and not self.plan.json_mode:
            text = str(block.get("text") or "")
            return [self._chunk(Delta(content=text))] if text or not self.started else []
        if block["type"] != "tool_use":
            return []
        if self.plan.json_mode and block["name"] == JSON_TOOL:
            self.json_blocks.add(index)
            return [] if self.started else [self._chunk(Delta(content=""))]
        if self.plan.legacy and self.tool_index:
            return []  # a legacy function_call is one call
        self.called = True
        self.tool_index[index] = len(self.tool_index)
        if self.plan.legacy:
            return [self._chunk(Delta(function_call={"name": str(block["name"]), "arguments": ""}))]
        call = ToolCallDelta(index=self.tool_index[index], id=str(block["id"]), type="function",
                             function={"name": str(block["name"]), "arguments": ""})  # fmt: skip
        return [self._chunk(Delta(tool_calls=[call]))]

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[ChatCompletionChunk]:
        if delta["type"] == "text_delta" and not self.plan.json_mode:
            return [self._chunk(Delta(content=str(delta["text"])))]
        if delta["type"] != "input_json_delta" or not delta.get("partial_json"):
            return []  # thinking and signature deltas are not part of OpenAI's answer
        fragment = str(delta["partial_json"])
        if index in self.json_blocks:
            return [self._chunk(Delta(content=fragment))]
        if index not in self.tool_index:
            return []
        if self.plan.legacy:
            return [self._chunk(Delta(function_call={"arguments": fragment}))]
        call = ToolCallDelta(index=self.tool_index[index], function={"arguments": fragment})
        return [self._chunk(Delta(tool_calls=[call]))]

    def _chunk(self, delta: Delta, finish: FinishReason | None = None) -> ChatCompletionChunk:
        if not self.started:
            self.started = True
            delta = delta.model_copy(update={"role": "assistant"})
            if delta.content is None and delta.tool_calls is None and delta.function_call is None:
                delta = delta.model_copy(update={"content": ""})
        choice = ChunkChoice(index=0, delta=delta, finish_reason=finish)
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=[choice],
                                   with_usage_field=self.include_usage)  # fmt: skip

    def _usage_chunk(self) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=[],
                                   usage=usage(self.usage), with_usage_field=True)  # fmt: skip


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
