"""The in-process client's ``client.responses.create``: the real model, the runtime's own Gateway and
store, plain and streamed, a conversation continued with ``previous_response_id``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import chatgate
from chatgate.errors import InvalidRequestError
from chatgate.protocol.responses_objects import Response, ResponseEvent, TextDeltaEvent
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def client() -> Iterator[chatgate.OpenAI]:
    with chatgate.OpenAI(settings=make_settings()) as c:
        yield c


def test_create_and_continue(client: chatgate.OpenAI) -> None:
    first = client.responses.create(model="gpt-4.1", input="My name is Zorblax.", max_output_tokens=16)
    assert isinstance(first, Response) and first.id.startswith("resp_") and first.output_text
    second = client.responses.create(model="gpt-4.1", input="What is my name?", max_output_tokens=16,
                                     previous_response_id=first.id)  # fmt: skip
    assert isinstance(second, Response) and second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens_details.cached_tokens > 0
    stats = client._async._rt.gateway.stats if client._async._rt is not None else None
    assert stats is not None and stats.requests["responses", 200] >= 2


def test_stream_events(client: chatgate.OpenAI) -> None:
    events = list(client.responses.create(model="gpt-4.1", input="Hi", max_output_tokens=16, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and isinstance(events[-1], ResponseEvent)
    text = "".join(e.delta for e in events if isinstance(e, TextDeltaEvent))
    assert text == events[-1].response.output_text != ""


def test_validation_is_the_servers(client: chatgate.OpenAI) -> None:
    with pytest.raises(InvalidRequestError) as info:
        client.responses.create(model="gpt-4.1", input="x", tools=[{"type": "web_search"}])
    assert info.value.param == "tools[0].type"
    with pytest.raises(InvalidRequestError) as info:
        client.responses.create(model="gpt-4.1", input="x", previous_response_id="resp_nope")
    assert info.value.code == "previous_response_not_found"
