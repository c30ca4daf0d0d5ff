"""Google Gemini (the Gemini API's ``generateContent`` and ``streamGenerateContent``).

Requests are translated by :mod:`chatgate.backends.gemini_translate`; this module posts them, reads
Gemini's answers (candidates, parts, finish reasons, usage metadata, prompt feedback) and streams
(server-sent events, one ``GenerateContentResponse`` each) back into chatgate's protocol models, and
maps Gemini's ``{"error": {"code", "message", "status"}}`` to :class:`UpstreamError`. The API key
travels in the ``x-goog-api-key`` header, never in the URL, and is scrubbed from upstream messages.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from chatgate.backends.gemini_translate import request_body
from chatgate.backends.upstream import UpstreamConfig, send_streaming
from chatgate.backends.upstream_errors import (
    GEMINI,
    connection_error,
    malformed,
    map_error,
    map_event_error,
    stream_cut,
)
from chatgate.errors import UpstreamError
from chatgate.exchange import Exchange
from chatgate.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model
from chatgate.protocol.responses import (
    AssistantMessage,
    Choice,
    ChunkChoice,
    CompletionTokensDetails,
    Delta,
    FinishReason,
    FunctionCall,
    PromptTokensDetails,
    ToolCall,
    ToolCallDelta,
    Usage,
)

FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"),
                    "content_filter"),
}  # fmt: skip


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)


class GeminiFunctionCall(_Wire):
    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class GeminiPart(_Wire):
    text: str | None = None
    function_call: GeminiFunctionCall | None = None
    thought: bool = False


class GeminiContent(_Wire):
    parts: list[GeminiPart] = Field(default_factory=list)


class GeminiCandidate(_Wire):
    content: GeminiContent | None = None
    finish_reason: str | None = None
    index: int | None = None

    def text_and_calls(self) -> tuple[str, list[GeminiFunctionCall]]:
        parts = [part for part in (self.content.parts if self.content else []) if not part.thought]
        calls = [part.function_call for part in parts if part.function_call is not None]
        return "".join(part.text or "" for part in parts), calls


class GeminiUsage(_Wire):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    cached_content_token_count: int = 0
    total_token_count: int | None = None


class GeminiPromptFeedback(_Wire):
    block_reason: str | None = None


class GeminiResponse(_Wire):
    """A ``GenerateContentResponse``: a whole answer, or one event of a stream."""

    candidates: list[GeminiCandidate] = Field(default_factory=list)
    prompt_feedback: GeminiPromptFeedback | None = None
    usage_metadata: GeminiUsage | None = None
    model_version: str | None = None
    response_id: str | None = None

    def blocked(self) -> bool:
        return not self.candidates and self.prompt_feedback is not None and bool(self.prompt_feedback.block_reason)


class GeminiBackend:
    """One deployment of a Gemini model."""

    def __init__(self, config: UpstreamConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client
        base = config.base_url.rstrip("/")
        if not base.endswith(("/v1beta", "/v1")):
            base += "/v1beta"
        self.url = f"{base}/models/{quote(config.model.removeprefix('models/'), safe='-._~')}"

    def models(self) -> list[Model]:
        return [Model(id=f"{self.config.provider}/{self.config.model}", created=0, owned_by=self.config.provider)]

    def _headers(self) -> dict[str, str]:
        headers = dict(self.config.headers)
        if self.config.api_key:
            headers["x-goog-api-key"] = self.config.api_key
        return headers

    async def complete(self, req: ChatCompletionRequest, ctx: Exchange) -> ChatCompletion:
        body = request_body(req)
        try:
            response = await self.client.post(f"{self.url}:generateContent", json=body, headers=self._headers(),
                                              timeout=self.config.timeout)  # fmt: skip
        except httpx.HTTPError as exc:
            raise connection_error(exc, self.config.provider) from None
        if response.status_code >= 400:
            raise self._error(response)
        try:
            parsed = GeminiResponse.model_validate(response.json())
        except (ValueError, ValidationError):
            raise malformed(self.config.provider) from None
        if not parsed.candidates and not parsed.blocked():
            raise malformed(self.config.provider)
        return completion(parsed, self.config.model, forced=_forced(req))

    async def stream(self, req: ChatCompletionRequest, ctx: Exchange) -> AsyncIterator[ChatCompletionChunk]:
        body = request_body(req)
        url = f"{self.url}:streamGenerateContent"
        request = self.client.build_request("POST", url, params={"alt": "sse"}, json=body, headers=self._headers(),
                                            timeout=self.config.timeout)  # fmt: skip
        response = await send_streaming(self.client, request, self.config.provider)
        try:
            if response.status_code >= 400:
                await response.aread()
                raise self._error(response)
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            translator = StreamTranslator(self.config.model, include_usage, self.config.provider, forced=_forced(req))
            async for event in self._events(response, translator):
                for chunk in translator.feed(event):
                    yield chunk
            for chunk in translator.close():
                yield chunk
        finally:
            await response.aclose()

    async def _events(self, response: httpx.Response, translator: StreamTranslator) -> AsyncIterator[GeminiResponse]:
        try:
            async for data in sse_data(response):
                yield self._parse_event(data)
        except UpstreamError as exc:  # an error event or bad JSON: retryable only before the first chunk
            exc.retryable = exc.retryable and not translator.choices
            raise
        except httpx.HTTPError as exc:
            if not translator.choices:  # nothing reached the client: as good as never connected
                raise connection_error(exc, self.config.provider) from None
            raise stream_cut(self.config.provider, retryable=False) from None

    def _parse_event(self, data: str) -> GeminiResponse:
        try:
            event = json.loads(data)
        except ValueError:
            raise malformed(self.config.provider) from None
        if isinstance(event, dict) and "error" in event:
            raise map_event_error(event, self.config.provider, self.config.api_key, dialect=GEMINI)
        try:
            return GeminiResponse.model_validate(event)
        except ValidationError:
            raise malformed(self.config.provider) from None

    def _error(self, response: httpx.Response) -> UpstreamError:
        return map_error(response.status_code, _json(response), response.headers, self.config.provider,
                         self.config.api_key, dialect=GEMINI)  # fmt: skip


async def sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined, as the SSE spec says)."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
        elif not line and lines:
            yield "\n".join(lines)
            lines = []
    if lines:
        yield "\n".join(lines)


# --- Gemini -> OpenAI ------------------------------------------------------------------------------


def _forced(req: ChatCompletionRequest) -> bool:
    """A tool_choice naming a function: OpenAI then finishes with ``stop``, not ``tool_calls``."""
    return req.tool_choice is not None and not isinstance(req.tool_choice, str)


def completion(resp: GeminiResponse, model: str, *, forced: bool = False) -> ChatCompletion:
    choices = [_choice(candidate, position, forced) for position, candidate in enumerate(resp.candidates)]
    if not choices:  # the prompt itself was blocked
        choices = [Choice(index=0, message=AssistantMessage(content=""), finish_reason="content_filter")]
    return ChatCompletion(id=_completion_id(resp), created=int(time.time()), model=resp.model_version or model,
                          choices=choices, usage=usage(resp.usage_metadata))  # fmt: skip


def _choice(candidate: GeminiCandidate, position: int, forced: bool = False) -> Choice:
    text, calls = candidate.text_and_calls()
    tool_calls = [
        ToolCall(id=new_call_id(), function=FunctionCall(name=call.name, arguments=json.dumps(call.args)))
        for call in calls
    ]
    message = AssistantMessage(content=text if text or not tool_calls else None, tool_calls=tool_calls or None)
    index = candidate.index if candidate.index is not None else position
    reason = finish_reason(candidate.finish_reason, bool(calls) and not forced)
    return Choice(index=index, message=message, finish_reason=reason)


def finish_reason(reason: str | None, has_calls: bool) -> FinishReason:
    mapped = FINISH.get(reason or "STOP", "stop")
    return "tool_calls" if mapped == "stop" and has_calls else mapped


def usage(meta: GeminiUsage | None) -> Usage | None:
    if meta is None:
        return None
    completion_tokens = meta.candidates_token_count + meta.thoughts_token_count
    total = meta.total_token_count
    return Usage(
        prompt_tokens=meta.prompt_token_count,
        completion_tokens=completion_tokens,
        total_tokens=total if total is not None else meta.prompt_token_count + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=meta.cached_content_token_count),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=meta.thoughts_token_count),
    )


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def _completion_id(resp: GeminiResponse) -> str:
    return f"chatcmpl-{resp.response_id or secrets.token_hex(12)}"


@dataclass
class _ChoiceState:
    calls: int = 0
    finished: bool = False


@dataclass
class StreamTranslator:
    """Gemini stream events in, OpenAI chunks out: role first, text and tool-call deltas, a finish
    chunk per choice, then (with ``include_usage``) the usage chunk."""

    model: str
    include_usage: bool
    provider: str
    forced: bool = False
    """A function was named in tool_choice: finish with ``stop``, as OpenAI does."""
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    choices: dict[int, _ChoiceState] = field(default_factory=dict)
    usage: Usage | None = None

    def feed(self, event: GeminiResponse) -> list[ChatCompletionChunk]:
        if not self.id:
            self.id, self.model = _completion_id(event), event.model_version or self.model
        if event.usage_metadata is not None:
            self.usage = usage(event.usage_metadata)
        if event.blocked():
            return [*self._start(0), self._chunk(0, Delta(), "content_filter")]
        chunks: list[ChatCompletionChunk] = []
        for position, candidate in enumerate(event.candidates):
            index = candidate.index if candidate.index is not None else position
            chunks += self._start(index)
            state = self.choices[index]
            text, calls = candidate.text_and_calls()
            if text:
                chunks.append(self._chunk(index, Delta(content=text)))
            for call in calls:
                first = ToolCallDelta(index=state.calls, id=new_call_id(), type="function",
                                      function={"name": call.name, "arguments": ""})  # fmt: skip
                rest = ToolCallDelta(index=state.calls, function={"arguments": json.dumps(call.args)})
                chunks += [self._chunk(index, Delta(tool_calls=[first])), self._chunk(index, Delta(tool_calls=[rest]))]
                state.calls += 1
            if candidate.finish_reason:
                called = state.calls > 0 and not self.forced
                chunks.append(self._chunk(index, Delta(), finish_reason(candidate.finish_reason, called)))
        return chunks

    def close(self) -> list[ChatCompletionChunk]:
        """The usage chunk, once every choice has finished; a stream cut otherwise."""
        if not self.choices or not all(state.finished for state in self.choices.values()):
            raise stream_cut(self.provider, retryable=not self.choices)
        if not self.include_usage:
            return []
        return [ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=[],
                                    usage=self.usage or Usage.of(0, 0), with_usage_field=True)]  # fmt: skip

    def _start(self, index: int) -> list[ChatCompletionChunk]:
        if index in self.choices:
            return []
        self.choices[index] = _ChoiceState()
        return [self._chunk(index, Delta(role="assistant", content=""))]

    def _chunk(self, index: int, delta: Delta, finish: FinishReason | None = None) -> ChatCompletionChunk:
        if finish is not None:
            self.choices[index].finished = True
        choice = ChunkChoice(index=index, delta=delta, finish_reason=finish)
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=[choice],
                                   with_usage_field=self.include_usage)  # fmt: skip


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
