"""The Backend contract: every source of completions (local engine, upstream provider, the
router itself) offers exactly this."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from chatgate.exchange import Exchange
from chatgate.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model


@runtime_checkable
class Backend(Protocol):
    """A source of chat completions.

    ``complete`` and ``stream`` raise :class:`chatgate.errors.ChatgateError` for anything the
    client should see; ``stream`` raises before its first chunk when it can (validation, context
    length), so the HTTP layer can still answer with a status code.
    """

    async def complete(self, req: ChatCompletionRequest, ctx: Exchange) -> ChatCompletion: ...

    def stream(self, req: ChatCompletionRequest, ctx: Exchange) -> AsyncIterator[ChatCompletionChunk]: ...

    def models(self) -> list[Model]: ...
