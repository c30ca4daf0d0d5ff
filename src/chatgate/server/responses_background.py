"""Background responses (``background: true``): the request is answered at once with the stored response
``queued``; the answer is made by a task of this replica, which stores it ``in_progress`` and then
``completed`` (``incomplete``, ``failed``), polled with ``GET /v1/responses/{id}``. ``POST
/v1/responses/{id}/cancel`` stops the task (its generation with it) and stores the response
``cancelled``; on another replica, where the task is not, the stored response is marked ``cancelled``
and its task, when it ends, keeps that status instead of its answer.

The task has its own :class:`~chatgate.exchange.Exchange` (the request's id, key and size), finished when
the answer is: one ledger row per response, with its usage. The HTTP exchange that queued it is not
metered (its access-log line remains).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette

from chatgate.errors import ChatgateError, InternalError, InvalidRequestError
from chatgate.exchange import Exchange
from chatgate.gateway.gateway import Gateway
from chatgate.gateway.responses_store import StoredResponses
from chatgate.protocol import ChatCompletion, ChatCompletionRequest
from chatgate.protocol.responses_api import ResponsesRequest
from chatgate.protocol.responses_objects import Response, ResponseError
from chatgate.server.responses_flow import responses_param, truncating
from chatgate.server.responses_translate import completed

log = logging.getLogger("chatgate.server")
TERMINAL = frozenset({"completed", "incomplete", "failed", "cancelled"})


@dataclass
class BackgroundResponses:
    """The background responses running on this replica, by response id."""

    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def start(self, job: Job) -> None:
        task = asyncio.create_task(job.run(), name=f"response {job.response.id}")
        self.tasks[job.response.id] = task
        task.add_done_callback(lambda _: self.tasks.pop(job.response.id, None))

    async def cancel(self, response_id: str) -> bool:
        """Cancel the task answering ``response_id`` and wait until it has stored the response
        ``cancelled``; False when it does not run here."""
        task = self.tasks.get(response_id)
        if task is None:
            return False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return True


def background_of(app: Starlette) -> BackgroundResponses:
    """The app's background responses (made on first use, kept on the app's state)."""
    found: BackgroundResponses | None = getattr(app.state, "background_responses", None)
    if found is None:
        found = app.state.background_responses = BackgroundResponses()
    return found


@dataclass
class Job:
    """One background response: the request, its conversation, where to store it and whom to bill."""

    req: ResponsesRequest
    items: list[dict[str, Any]]
    response: Response
    gateway: Gateway
    store: StoredResponses
    ex: Exchange

    async def run(self) -> None:
        running = self.response.model_copy(update={"status": "in_progress"})
        final, error = running, None
        try:
            await self.store.save(self.ex.owner, running, self.items)

            def answer(chat: ChatCompletionRequest) -> Any:
                return self.gateway.complete(chat, self.ex)

            completion: ChatCompletion = await truncating(self.req, self.items, answer)
            final = completed(running, completion)
        except asyncio.CancelledError:
            self.ex.disconnected = True
            final = running.model_copy(update={"status": "cancelled"})
        except ChatgateError as exc:
            error = responses_param(exc)
        except Exception:
            log.exception("background response failed", extra={"fields": {"request_id": self.ex.request_id}})
            error = InternalError("The server had an error while answering this response.")
        if error is not None:
            final = running.model_copy(update={"status": "failed",
                                               "error": ResponseError(code=error.code or error.type,
                                                                      message=error.message)})  # fmt: skip
        await asyncio.shield(self._end(final, error))

    async def _end(self, final: Response, error: ChatgateError | None) -> None:
        """Store the final state (unless the response was cancelled elsewhere meanwhile); its ledger row."""
        try:
            stored = await self.store.get(self.ex.owner, final.id)
            if stored.status != "cancelled":
                await self.store.save(self.ex.owner, final, self.items)
        except Exception as exc:
            log.error("storing a background response failed (%s)", type(exc).__name__,
                      extra={"fields": {"request_id": self.ex.request_id}})  # fmt: skip
        self.ex.finished_at = time.monotonic()
        self.ex.status = 499 if self.ex.disconnected else error.status if error is not None else 200
        self.ex.error_type = error.type if error is not None else None
        self.gateway.finish(self.ex)


async def queue(job: Job, running: BackgroundResponses) -> Response:
    """Store the response ``queued`` and start its task; the response to answer with."""
    queued = job.response.model_copy(update={"status": "queued"})
    await job.store.save(job.ex.owner, queued, job.items)
    running.start(job)
    return queued


async def cancel(store: StoredResponses, owner: str, response_id: str, running: BackgroundResponses) -> Response:
    """Cancel a background response that has not ended (one already cancelled is answered as it is)."""
    found = await store.get(owner, response_id)
    if not found.background:
        raise InvalidRequestError("Only responses created with 'background': true can be cancelled.",
                                  param=None, code="invalid_value")  # fmt: skip
    if found.status == "cancelled":
        return found
    if found.status in TERMINAL:
        raise InvalidRequestError(f"Cannot cancel a response with status '{found.status}'.", param=None,
                                  code="invalid_value")  # fmt: skip
    if not await running.cancel(response_id):  # running on another replica (or lost with a restart)
        items = (await store.conversation(owner, response_id)).input_items
        await store.save(owner, found.model_copy(update={"status": "cancelled"}), items)
    return await store.get(owner, response_id)
