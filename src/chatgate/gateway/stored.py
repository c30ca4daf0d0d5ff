"""Stored completions (``store: true``): kept per owner (the key that made them) and served back by
OpenAI's ``/v1/chat/completions`` list, retrieve, update, delete and messages routes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chatgate.errors import NotFoundError
from chatgate.protocol import ChatCompletion, ChatCompletionRequest

Order = Literal["asc", "desc"]
SCAN = 200


@dataclass(frozen=True)
class Page:
    data: list[dict[str, Any]]
    has_more: bool

    def body(self) -> dict[str, Any]:
        return {"object": "list", "data": self.data, "first_id": self.data[0]["id"] if self.data else None,
                "last_id": self.data[-1]["id"] if self.data else None, "has_more": self.has_more}  # fmt: skip


class StoredCompletions:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def save(self, owner: str, req: ChatCompletionRequest, completion: ChatCompletion) -> None:
        messages = req.model_dump(mode="json", exclude_none=True)["messages"]
        async with self.engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO stored_completions (id, owner, model, created_at, seq, metadata, request, "
                     "completion) VALUES (:id, :owner, :model, :created_at, :seq, :metadata, :request, :completion)"),
                {"id": completion.id, "owner": owner, "model": completion.model, "created_at": completion.created,
                 "seq": time.time_ns(), "metadata": json.dumps(req.metadata or {}),
                 "request": json.dumps(messages), "completion": completion.model_dump_json()},
            )  # fmt: skip

    async def get(self, owner: str, completion_id: str) -> dict[str, Any]:
        return _public(await self._row(owner, completion_id))

    async def list(
        self, owner: str, *, model: str | None, metadata: dict[str, str], after: str | None, limit: int, order: Order
    ) -> Page:
        conditions, params = ["owner = :owner"], {"owner": owner}
        if model is not None:
            conditions.append("model = :model")
            params["model"] = model
        if after is not None:
            seq = (await self._row(owner, after)).seq
            conditions.append("seq > :seq" if order == "asc" else "seq < :seq")
            params["seq"] = seq
        direction = "ASC" if order == "asc" else "DESC"
        found: list[dict[str, Any]] = []
        async with self.engine.connect() as conn:
            while True:  # metadata is matched here, so scan in batches until the page is full
                query = (f"SELECT id, model, seq, metadata, completion FROM stored_completions WHERE "
                         f"{' AND '.join(conditions)} ORDER BY seq {direction} LIMIT {SCAN}")  # fmt: skip
                rows = list(await conn.execute(text(query), params))
                for row in rows:
                    if all(json.loads(row.metadata).get(k) == v for k, v in metadata.items()):
                        found.append(_public(row))
                        if len(found) > limit:
                            return Page(found[:limit], True)
                if len(rows) < SCAN:
                    return Page(found, False)
                conditions = [c for c in conditions if not c.startswith("seq")]
                conditions.append("seq > :seq" if order == "asc" else "seq < :seq")
                params["seq"] = rows[-1].seq

    async def update(self, owner: str, completion_id: str, metadata: dict[str, str] | None) -> dict[str, Any]:
        await self._row(owner, completion_id)
        async with self.engine.begin() as conn:
            await conn.execute(text("UPDATE stored_completions SET metadata = :m WHERE id = :id AND owner = :owner"),
                               {"m": json.dumps(metadata or {}), "id": completion_id, "owner": owner})  # fmt: skip
        return await self.get(owner, completion_id)

    async def delete(self, owner: str, completion_id: str) -> dict[str, Any]:
        await self._row(owner, completion_id)
        async with self.engine.begin() as conn:
            await conn.execute(text("DELETE FROM stored_completions WHERE id = :id AND owner = :owner"),
                               {"id": completion_id, "owner": owner})  # fmt: skip
        return {"object": "chat.completion.deleted", "id": completion_id, "deleted": True}

    async def messages(self, owner: str, completion_id: str, *, after: str | None, limit: int, order: Order) -> Page:
        row = await self._row(owner, completion_id, request=True)
        messages = [_message(f"{completion_id}-{i}", m) for i, m in enumerate(json.loads(row.request))]
        if order == "desc":
            messages.reverse()
        if after is not None:
            ids = [m["id"] for m in messages]
            if after not in ids:
                raise NotFoundError(f"No message with id '{after}' in chat completion '{completion_id}'.",
                                    param="after")  # fmt: skip
            messages = messages[ids.index(after) + 1 :]
        return Page(messages[:limit], len(messages) > limit)

    async def _row(self, owner: str, completion_id: str, *, request: bool = False) -> Any:
        columns = "id, model, seq, metadata, completion" + (", request" if request else "")
        async with self.engine.connect() as conn:
            query = text(f"SELECT {columns} FROM stored_completions WHERE id = :id AND owner = :owner")
            row = (await conn.execute(query, {"id": completion_id, "owner": owner})).first()
        if row is None:
            raise NotFoundError(f"No chat completion found with id '{completion_id}'.", code="not_found")
        return row


def _public(row: Any) -> dict[str, Any]:
    completion: dict[str, Any] = json.loads(row.completion)
    return {**completion, "metadata": json.loads(row.metadata)}


def _message(message_id: str, message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    parts = None
    if isinstance(content, list):
        parts = content
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    out = {"id": message_id, "role": message.get("role"), "content": content, "content_parts": parts}
    for extra in ("name", "tool_calls", "tool_call_id", "function_call", "refusal"):
        if extra in message:
            out[extra] = message[extra]
    return out
