"""Stored completions round-trip through the official SDK: list (model, metadata, after, limit,
order), retrieve, update, delete and messages, each key seeing only its own."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.gateway.helpers import sdk_with_new_key
from tests.serving import ServerThread


def ask(text: str) -> list[Any]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def test_stored_completions_round_trip_through_the_sdk(admin_server: ServerThread) -> None:
    client = sdk_with_new_key(admin_server, "s")
    tags = [{"run": "a" if i < 2 else "b", "i": str(i)} for i in range(3)]
    made = [
        client.chat.completions.create(model="gpt-4", messages=ask(f"Say {i}"), max_tokens=2, store=True, metadata=tag)
        for i, tag in enumerate(tags)
    ]
    client.chat.completions.create(model="gpt-4", messages=ask("not stored"), max_tokens=2)
    ids = [c.id for c in made]
    assert [c.id for c in client.chat.completions.list()] == ids
    assert [c.id for c in client.chat.completions.list(order="desc")] == ids[::-1]
    assert [c.id for c in client.chat.completions.list(metadata={"run": "a"})] == ids[:2]
    assert [c.id for c in client.chat.completions.list(model="smollm2-135m-instruct", after=ids[0])] == ids[1:]
    assert client.chat.completions.list(model="other").data == []
    page = client.chat.completions.list(limit=2)
    assert [c.id for c in page.data] == ids[:2] and page.has_more
    assert [c.id for c in page.get_next_page().data] == ids[2:]  # the SDK's cursor: after=last id
    assert [c.id for c in client.chat.completions.list(limit=1)] == ids  # auto-pagination walks every page

    got = client.chat.completions.retrieve(ids[1])
    assert got.id == ids[1] and got.choices[0].message.content == made[1].choices[0].message.content
    updated = client.chat.completions.update(ids[1], metadata={"reviewed": "yes"})
    assert getattr(updated, "metadata", None) == {"reviewed": "yes"}
    assert [c.id for c in client.chat.completions.list(metadata={"reviewed": "yes"})] == [ids[1]]

    messages = client.chat.completions.messages.list(ids[1])
    assert [(m.id, m.content) for m in messages] == [(f"{ids[1]}-0", "Be brief."), (f"{ids[1]}-1", "Say 1")]
    assert [m.id for m in client.chat.completions.messages.list(ids[1], order="desc", limit=1)] == [
        f"{ids[1]}-1", f"{ids[1]}-0"]  # fmt: skip

    deleted = client.chat.completions.delete(ids[0])
    assert deleted.deleted and deleted.id == ids[0] and deleted.object == "chat.completion.deleted"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(ids[0])


def test_each_key_sees_only_its_own_and_streams_are_stored(admin_server: ServerThread) -> None:
    mine, theirs = sdk_with_new_key(admin_server, "s"), sdk_with_new_key(admin_server, "s")
    text = ""
    completion_id = ""
    for chunk in mine.chat.completions.create(model="gpt-4", messages=ask("Hello"), max_tokens=3, store=True,
                                              stream=True):  # fmt: skip
        completion_id = chunk.id
        text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    stored = mine.chat.completions.retrieve(completion_id)
    assert stored.choices[0].message.content == text and stored.usage is not None
    assert theirs.chat.completions.list().data == []
    for call in (theirs.chat.completions.retrieve, theirs.chat.completions.delete,
                 theirs.chat.completions.messages.list):  # fmt: skip
        with pytest.raises(openai.NotFoundError) as err:
            call(completion_id)
        assert err.value.code == "not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        mine.chat.completions.list(limit=1000)
    assert bad.value.param == "limit"
