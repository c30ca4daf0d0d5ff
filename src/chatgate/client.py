"""``from chatgate import OpenAI``: the official SDK's ``chat.completions.create`` interface, with
the same gateway as the server's (router, response cache, stored completions, usage ledger) running in
the caller's process (no server), configured by the same config file and built by the same
composition root (:class:`chatgate.runtime.Runtime`).

    client = chatgate.OpenAI()                       # or OpenAI(config="chatgate.yaml")
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[...], fallback_models=["local/…"])
    for chunk in client.chat.completions.create(model=..., messages=..., stream=True): ...

    async with chatgate.AsyncOpenAI() as client:
        r = await client.chat.completions.create(...)

    r = client.responses.create(model="gpt-4.1", input="Hello")   # the Responses API, stored and continued
    client.responses.create(model="gpt-4.1", input="And then?", previous_response_id=r.id)

Requests are validated exactly as the server validates them and errors are the same
:class:`chatgate.errors.ChatgateError` types the server renders. Results are chatgate's protocol
models, which have the SDK's attribute shape (``r.choices[0].message.content``) and read as
mappings too, as OneLLM's documentation writes (``r.choices[0].message["content"]``,
``r.usage["total_tokens"]``, ``chunk.choices[0].delta.get("content")``); a returned ``message`` can
be appended to ``messages`` as it is.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from pydantic import BaseModel

from chatgate import client_responses
from chatgate.config import Settings, load_settings
from chatgate.protocol import ChatCompletion, ChatCompletionChunk
from chatgate.protocol.responses_objects import Response as ResponseObject
from chatgate.protocol.responses_objects import StreamEvent
from chatgate.protocol.validation import parse_chat_request
from chatgate.runtime import Runtime
from chatgate.streams import aclose

T = TypeVar("T")


def _body(kwargs: dict[str, Any]) -> bytes:
    """The request's JSON. Objects a client returned (a ``message`` appended to ``messages`` for the
    next turn, as OneLLM's and the SDK's examples do) are written as their wire JSON."""
    return json.dumps({k: v for k, v in kwargs.items() if v is not None}, default=_wire).encode()


def _wire(value: object) -> Any:
    if isinstance(value, BaseModel):  # chatgate's protocol objects, or the openai SDK's
        return value.model_dump(mode="json", exclude_none=True)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class _AsyncCompletions:
    def __init__(self, owner: AsyncOpenAI) -> None:
        self._owner = owner

    async def create(self, **kwargs: Any) -> Any:
        """Same parameters as the SDK's, plus ``fallback_models``, ``retries`` and ``timeout``."""
        runtime = await self._owner._runtime()
        body = _body(kwargs)
        req = parse_chat_request(body)
        if req.stream:
            return runtime.stream(req, body_bytes=len(body))
        return await runtime.complete(req, body_bytes=len(body))


class _Chat:
    def __init__(self, completions: Any) -> None:
        self.completions = completions


class _AsyncResponses:
    def __init__(self, owner: AsyncOpenAI) -> None:
        self._owner = owner

    async def create(self, **kwargs: Any) -> Any:
        """The Responses API's parameters (``client.responses.create``), plus chatgate's ``seed``, ``top_k``,
        ``min_p``, ``repetition_penalty`` and ``fallback_models``."""
        return await client_responses.create(await self._owner._runtime(), _body(kwargs))


class AsyncOpenAI:
    """The in-process client for asyncio code. Close it (``async with`` or ``await close()``)."""

    def __init__(self, *, config: str | Path | None = None, settings: Settings | None = None) -> None:
        self._settings = settings or load_settings(config)
        self._rt: Runtime | None = None
        self.chat = _Chat(_AsyncCompletions(self))
        self.responses = _AsyncResponses(self)

    async def _runtime(self) -> Runtime:
        if self._rt is None:
            self._rt = await Runtime.open(self._settings)
        return self._rt

    async def close(self) -> None:
        if self._rt is not None:
            await self._rt.aclose()
            self._rt = None

    async def __aenter__(self) -> AsyncOpenAI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _SyncCompletions:
    def __init__(self, owner: OpenAI) -> None:
        self._owner = owner

    def create(self, **kwargs: Any) -> ChatCompletion | Iterator[ChatCompletionChunk]:
        """Same parameters as the SDK's, plus ``fallback_models``, ``retries`` and ``timeout``."""
        result = self._owner._run(self._owner._async.chat.completions.create(**kwargs))
        if isinstance(result, ChatCompletion):
            return result
        return self._owner._iterate(result)


class _SyncResponses:
    def __init__(self, owner: OpenAI) -> None:
        self._owner = owner

    def create(self, **kwargs: Any) -> ResponseObject | Iterator[StreamEvent]:
        """The Responses API's parameters; a response, or with ``stream=True`` its events."""
        result = self._owner._run(self._owner._async.responses.create(**kwargs))
        if isinstance(result, ResponseObject):
            return result
        return self._owner._iterate(result)


class OpenAI:
    """The in-process client for plain code: the router runs on a private event-loop thread."""

    def __init__(self, *, config: str | Path | None = None, settings: Settings | None = None) -> None:
        self._async = AsyncOpenAI(config=config, settings=settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chatgate-client", daemon=True)
        self._thread.start()
        self.chat = _Chat(_SyncCompletions(self))
        self.responses = _SyncResponses(self)

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def _iterate(self, chunks: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._run(anext(chunks))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            self._run(aclose(chunks))

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._async.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    def __enter__(self) -> OpenAI:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
