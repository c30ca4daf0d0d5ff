"""The composition root: a Runtime opens the database, the engines and the gateway from the settings, and its
in-process exchanges (the client's and the CLI's) go through the same Gateway and leave ledger rows, as the
server's do."""

from __future__ import annotations

import asyncio
import tempfile

import pytest
from sqlalchemy import text

from chatgate.config import Settings
from chatgate.errors import ModelNotFoundError
from chatgate.runtime import Runtime, running
from tests.conftest import make_settings
from tests.gateway.test_gateway import request


def priced(settings: Settings) -> Settings:
    """The default local model, priced, and the ledger written at once on close."""
    models = [m.model_copy(update={"input_price_per_million": 1.0, "output_price_per_million": 2.0})
              for m in settings.models]  # fmt: skip
    return settings.model_copy(update={"models": models, "data_dir": tempfile.mkdtemp(prefix="chatgate-rt-")})


def test_in_process_exchanges_leave_ledger_rows_with_their_outcome() -> None:
    settings = priced(make_settings())
    model = settings.models[0].id

    async def run() -> list[tuple[str, int, int, int]]:
        async with running(settings) as runtime:
            req, _ = request(model=model, max_tokens=3)
            done = await runtime.complete(req, body_bytes=100)
            assert done.usage is not None
            streamed, _ = request(model=model, max_tokens=40, stream=True)
            chunks = runtime.stream(streamed)
            await anext(chunks)
            await chunks.aclose()  # the caller stopped reading: as a client that disconnects
            unknown, _ = request(model="no-such-model")
            with pytest.raises(ModelNotFoundError):
                await runtime.complete(unknown)
        # closed: the ledger's last rows are written; read them with a fresh runtime on the same database
        reopened = await Runtime.open(settings.model_copy(update={"models": []}))
        try:
            async with reopened.database.connect() as conn:
                rows = await conn.execute(text("SELECT model, status, completion_tokens, cost FROM usage_ledger "
                                               "ORDER BY created_at, status"))  # fmt: skip
                return [tuple(r) for r in rows]
        finally:
            await reopened.aclose()

    rows = asyncio.run(run())
    by_status = {status: (model_, tokens, cost) for model_, status, tokens, cost in rows}
    assert set(by_status) == {200, 404, 499}
    assert by_status[200][0] == model and by_status[200][1] == 3 and by_status[200][2] > 0
    assert by_status[499][2] > 0  # what it delivered before the caller stopped reading
    assert by_status[404] == ("no-such-model", 0, 0)
