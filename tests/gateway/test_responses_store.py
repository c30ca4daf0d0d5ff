"""Stored responses through the official SDK, on SQLite and PostgreSQL, each key seeing only its own:
``retrieve``, ``delete``, ``input_items.list`` (OpenAI's pagination), a three-turn conversation with
``previous_response_id`` (later turns see the earlier ones and reuse their KV prefix), ``item_reference``,
and the gateway's metrics per endpoint."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseOutputMessage

from tests.conftest import make_settings
from tests.serving import ServerThread

MASTER = "sk-master-responses-0123456789"
MODEL = "gpt-4.1-mini"


@pytest.fixture
def storing(tmp_path: Path, server_database: str | None) -> Iterator[ServerThread]:
    server = ServerThread(make_settings(master_key=MASTER, data_dir=str(tmp_path), database_url=server_database))
    server.start()
    yield server
    server.stop()


def client_for(server: ServerThread) -> openai.OpenAI:
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {MASTER}"}) as admin:
        key = admin.post("/admin/keys", json={"name": "r"}).json()["key"]
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)


def test_three_turns_with_previous_response_id(storing: ServerThread) -> None:
    client = client_for(storing)
    turns = ["My name is Zorblax.", "I live in Oslo.", "What is my name?"]
    made = [client.responses.create(model=MODEL, input=turns[0], instructions="Be brief.", max_output_tokens=16,
                                    temperature=0)]  # fmt: skip
    for text in turns[1:]:
        made.append(client.responses.create(model=MODEL, input=text, previous_response_id=made[-1].id,
                                            instructions="Be brief.", max_output_tokens=16, temperature=0))  # fmt: skip
    assert [r.previous_response_id for r in made] == [None, made[0].id, made[1].id]
    usage = [r.usage for r in made]
    assert all(u is not None for u in usage)
    # each turn's prompt holds the earlier turns (their input and output), and reuses their KV cells
    for before, after in itertools.pairwise(usage):
        assert before is not None and after is not None
        assert after.input_tokens > before.input_tokens + before.output_tokens
        assert after.input_tokens_details.cached_tokens >= before.input_tokens
    items = list(client.responses.input_items.list(made[2].id, order="asc"))
    texts = [getattr(i, "content", [None])[0] for i in items]
    assert [getattr(t, "text", None) for t in texts[::2]] == turns
    assert [i.type for i in items] == ["message"] * 5
    assert [getattr(i, "role", None) for i in items] == ["user", "assistant"] * 2 + ["user"]
    assert isinstance(items[1], ResponseOutputMessage) and items[1].id == made[0].output[0].id


def test_retrieve_delete_and_input_items_pagination(storing: ServerThread) -> None:
    client = client_for(storing)
    r = client.responses.create(model=MODEL, max_output_tokens=16, metadata={"run": "1"}, input=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "One"},
        {"role": "assistant", "content": "Two"}, {"role": "user", "content": "Three"}])  # fmt: skip
    got = client.responses.retrieve(r.id)
    assert got.model_dump() == r.model_dump() and got.metadata == {"run": "1"}
    items = client.responses.input_items.list(r.id)  # OpenAI's default order: newest first
    assert [getattr(i, "role", None) for i in items.data] == ["user", "assistant", "user", "system"]
    cursor = items.model_dump()
    assert cursor["first_id"] == items.data[0].id and cursor["last_id"] == items.data[-1].id and not items.has_more
    page = client.responses.input_items.list(r.id, order="asc", limit=3)
    assert [getattr(i, "role", None) for i in page.data] == ["system", "user", "assistant"] and page.has_more
    rest = page.get_next_page()
    assert [getattr(i, "role", None) for i in rest.data] == ["user"] and not rest.has_more
    assert len(list(client.responses.input_items.list(r.id, limit=1))) == 4  # auto-pagination walks every page
    client.responses.delete(r.id)
    for call in (client.responses.retrieve, client.responses.delete, client.responses.input_items.list):
        with pytest.raises(openai.NotFoundError):
            call(r.id)


def test_each_key_sees_only_its_own(storing: ServerThread) -> None:
    alice, bob = client_for(storing), client_for(storing)
    r = alice.responses.create(model=MODEL, input="Hi", max_output_tokens=16)
    for call in (bob.responses.retrieve, bob.responses.delete, bob.responses.input_items.list):
        with pytest.raises(openai.NotFoundError):
            call(r.id)
    with pytest.raises(openai.BadRequestError) as info:
        bob.responses.create(model=MODEL, input="Hi", previous_response_id=r.id, max_output_tokens=16)
    assert (info.value.code, info.value.param) == ("previous_response_not_found", "previous_response_id")
    with pytest.raises(openai.BadRequestError) as info:
        reference: Any = {"type": "item_reference", "id": r.output[0].id}
        bob.responses.create(model=MODEL, input=[reference], max_output_tokens=16)
    assert info.value.param == "input[0].id"
    assert alice.responses.retrieve(r.id).id == r.id


def test_store_false_keeps_nothing(storing: ServerThread) -> None:
    client = client_for(storing)
    r = client.responses.create(model=MODEL, input="Hi", max_output_tokens=16, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="Hi", previous_response_id=r.id, max_output_tokens=16)
    assert info.value.code == "previous_response_not_found"


def test_item_reference_replays_a_stored_item(storing: ServerThread) -> None:
    client = client_for(storing)
    first = client.responses.create(model=MODEL, input="Say hi.", max_output_tokens=16)
    reference: Any = {"type": "item_reference", "id": first.output[0].id}
    second = client.responses.create(model=MODEL, max_output_tokens=16, input=[
        {"role": "user", "content": "Say hi."}, reference, {"role": "user", "content": "Again."}])  # fmt: skip
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    items = list(client.responses.input_items.list(second.id, order="asc"))
    assert items[1].id == first.output[0].id and getattr(items[1], "role", None) == "assistant"


def settled(client: openai.OpenAI, response_id: str) -> Response:
    """Poll until the response ends (a hang guard of minutes, not a speed bound)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        r = client.responses.retrieve(response_id)
        if r.status not in ("queued", "in_progress"):
            return r
        time.sleep(0.2)
    raise AssertionError("the background response never ended")


def test_background_response_is_queued_then_completed(storing: ServerThread) -> None:
    client = client_for(storing)
    r = client.responses.create(model=MODEL, input="Say hi.", max_output_tokens=16, background=True)
    assert r.status == "queued" and r.background is True and r.output == []
    done = settled(client, r.id)
    assert done.status in ("completed", "incomplete") and done.output_text and done.usage is not None
    with pytest.raises(openai.BadRequestError):  # an ended response cannot be cancelled
        client.responses.cancel(r.id)
    follow = client.responses.create(model=MODEL, input="Again.", previous_response_id=r.id, max_output_tokens=16)
    assert follow.usage is not None and follow.usage.input_tokens > done.usage.input_tokens


def test_background_response_can_be_cancelled(storing: ServerThread) -> None:
    client = client_for(storing)
    words = {"type": "array", "items": {"type": "string", "maxLength": 6}, "minItems": 400}
    many: Any = {"type": "object", "properties": {"words": words}, "required": ["words"]}
    r = client.responses.create(model=MODEL, input="List words.", max_output_tokens=1800, background=True,
                                text={"format": {"type": "json_schema", "name": "w", "schema": many}})  # fmt: skip
    deadline = time.monotonic() + 600
    while client.responses.retrieve(r.id).status == "queued" and time.monotonic() < deadline:
        time.sleep(0.05)
    cancelled = client.responses.cancel(r.id)
    assert cancelled.status == "cancelled" and cancelled.id == r.id
    assert client.responses.cancel(r.id).status == "cancelled"  # cancelling again is harmless
    assert settled(client, r.id).status == "cancelled"


def test_background_needs_store_and_no_stream(storing: ServerThread) -> None:
    client = client_for(storing)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="x", background=True, store=False)
    assert info.value.param == "background"
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="x", background=True, stream=True)
    assert (info.value.param, info.value.code) == ("background", "unsupported_parameter")


def test_cancel_is_for_background_responses_only(storing: ServerThread) -> None:
    client = client_for(storing)
    r = client.responses.create(model=MODEL, input="Hi", max_output_tokens=16)
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_unknown")


def test_metrics_count_the_responses_endpoint(storing: ServerThread) -> None:
    client = client_for(storing)
    client.responses.create(model=MODEL, input="Hi", max_output_tokens=16)
    with httpx.Client(base_url=storing.base_url) as http:
        text = http.get("/metrics", headers={"Authorization": f"Bearer {MASTER}"}).text
    assert 'chatgate_gateway_requests_total{endpoint="responses",status="200"} 1' in text
