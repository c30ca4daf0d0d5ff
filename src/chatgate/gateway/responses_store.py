"""Stored responses (the Responses API's ``store``, true by default): each response with every item it
answered (earlier turns included), kept per owner (the key that made it) as stored completions are, and
served back by ``GET``/``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items``; a later
request continues the conversation with ``previous_response_id``, or replays one item with
``item_reference``. Kept until deleted."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from chatgate.errors import InvalidRequestError, NotFoundError
from chatgate.gateway.stored import Order, Page
from chatgate.protocol.responses_objects import Response


@dataclass(frozen=True)
class Conversation:
    """What a stored response answered and what it said: the items a continuation starts from."""

    response: Response
    input_items: list[dict[str, Any]]

    def items(self) -> list[dict[str, Any]]:
        """Its input items, then its output items: the conversation so far."""
        return self.input_items + [item.model_dump(mode="json") for item in self.response.output]


class StoredResponses:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def save(self, owner: str, response: Response, input_items: list[dict[str, Any]]) -> None:
        """Keep ``response`` (replacing an earlier state of the same id) and index its output items."""
        async with self.engine.begin() as conn:
            await conn.execute(text("DELETE FROM response_items WHERE response_id = :id AND owner = :owner"),
                               {"id": response.id, "owner": owner})  # fmt: skip
            await conn.execute(text("DELETE FROM stored_responses WHERE id = :id AND owner = :owner"),
                               {"id": response.id, "owner": owner})  # fmt: skip
            await conn.execute(
                text("INSERT INTO stored_responses (id, owner, created_at, seq, previous_response_id, response, "
                     "input_items) VALUES (:id, :owner, :created_at, :seq, :previous, :response, :input_items)"),
                {"id": response.id, "owner": owner, "created_at": response.created_at, "seq": time.time_ns(),
                 "previous": response.previous_response_id, "response": response.model_dump_json(),
                 "input_items": json.dumps(input_items)},
            )  # fmt: skip
            rows = [{"owner": owner, "id": item.id, "response_id": response.id, "item": item.model_dump_json()}
                    for item in response.output]  # fmt: skip
            if rows:
                await conn.execute(text("INSERT INTO response_items (owner, id, response_id, item) VALUES "
                                        "(:owner, :id, :response_id, :item)"), rows)  # fmt: skip

    async def get(self, owner: str, response_id: str) -> Response:
        row = await self._row(owner, response_id)
        if row is None:
            raise NotFoundError(f"Response with id '{response_id}' not found.")
        return Response.model_validate_json(row.response)

    async def conversation(self, owner: str, response_id: str) -> Conversation:
        """The conversation a ``previous_response_id`` continues (400 ``previous_response_not_found`` when the
        caller has no such response)."""
        row = await self._row(owner, response_id, items=True)
        if row is None:
            raise InvalidRequestError(f"Previous response with id '{response_id}' not found.",
                                      param="previous_response_id", code="previous_response_not_found")  # fmt: skip
        return Conversation(Response.model_validate_json(row.response), json.loads(row.input_items))

    async def output_items(self, owner: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The caller's stored output items among ``ids``, by id (for ``item_reference``)."""
        if not ids:
            return {}
        query = text("SELECT id, item FROM response_items WHERE owner = :owner AND id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        async with self.engine.connect() as conn:
            rows = await conn.execute(query, {"owner": owner, "ids": ids})
            return {row.id: json.loads(row.item) for row in rows}

    async def delete(self, owner: str, response_id: str) -> dict[str, Any]:
        if await self._row(owner, response_id) is None:
            raise NotFoundError(f"Response with id '{response_id}' not found.")
        async with self.engine.begin() as conn:
            for table, column in (("response_items", "response_id"), ("stored_responses", "id")):
                await conn.execute(text(f"DELETE FROM {table} WHERE {column} = :id AND owner = :owner"),
                                   {"id": response_id, "owner": owner})  # fmt: skip
        return {"id": response_id, "object": "response", "deleted": True}

    async def input_items(self, owner: str, response_id: str, *, after: str | None, limit: int, order: Order) -> Page:
        """A page of the items the response answered, as OpenAI pages them (``order`` desc by default)."""
        row = await self._row(owner, response_id, items=True)
        if row is None:
            raise NotFoundError(f"Response with id '{response_id}' not found.")
        items: list[dict[str, Any]] = json.loads(row.input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.get("id") for item in items]
            if after not in ids:
                raise NotFoundError(f"Item with id '{after}' not found in response '{response_id}'.", param="after")
            items = items[ids.index(after) + 1 :]
        return Page(items[:limit], len(items) > limit)

    async def _row(self, owner: str, response_id: str, *, items: bool = False) -> Any:
        columns = "id, response" + (", input_items" if items else "")
        async with self.engine.connect() as conn:
            query = text(f"SELECT {columns} FROM stored_responses WHERE id = :id AND owner = :owner")
            return (await conn.execute(query, {"id": response_id, "owner": owner})).first()
