"""The Responses API in front of an OpenAI-compatible upstream: a second chatgate (the session server)
answers, through the front's router, the same requests as the local model does; state (stored responses,
``previous_response_id``) is kept by the front."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from chatgate.config import Settings, load_settings
from tests.serving import ServerThread

GROUP = "via-upstream"
WEATHER: Any = {
    "type": "function", "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
}  # fmt: skip


def front_settings(upstream: str, data_dir: str) -> Settings:
    """No local model: every answer comes from the upstream chatgate."""
    base = load_settings(env={})
    deployment = {"provider": "inner", "model": "gpt-4.1-mini"}
    data = {"data_dir": data_dir, "models": [], "retry_backoff_seconds": 0.01,
            "providers": {"inner": {"base_url": f"{upstream}/v1", "api_key": "sk-inner"}},
            "upstream_models": [{"name": GROUP, "deployments": [deployment]}]}  # fmt: skip
    return Settings.model_validate({**base.model_dump(), **data})


@pytest.fixture(scope="module")
def front(base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    server = ServerThread(front_settings(base_url, str(tmp_path_factory.mktemp("front")))).start()
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0) as c:
        yield c
    server.stop()


def test_plain_and_json_schema_through_the_upstream(front: openai.OpenAI) -> None:
    r = front.responses.create(model=GROUP, instructions="Be brief.", input="Say hello.", max_output_tokens=16)
    assert r.id.startswith("resp_") and r.output_text and r.usage is not None and r.usage.output_tokens > 0
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"],
              "additionalProperties": False}  # fmt: skip
    r = front.responses.create(model=GROUP, input="Name a city.", max_output_tokens=64,
                               text={"format": {"type": "json_schema", "name": "c", "schema": schema}})  # fmt: skip
    assert set(json.loads(r.output_text)) == {"city"}


def test_function_tool_round_trip_and_state_through_the_upstream(front: openai.OpenAI) -> None:
    first = front.responses.create(model=GROUP, input="Weather in Paris?", tools=[WEATHER], tool_choice="required",
                                   parallel_tool_calls=False, max_output_tokens=64)  # fmt: skip
    [call] = first.output
    assert call.type == "function_call" and "city" in json.loads(call.arguments)
    output: Any = {"type": "function_call_output", "call_id": call.call_id, "output": "21 C"}
    answer = front.responses.create(model=GROUP, previous_response_id=first.id, tools=[WEATHER], tool_choice="none",
                                    max_output_tokens=32, input=[output])  # fmt: skip
    assert answer.output_text and answer.previous_response_id == first.id
    items = list(front.responses.input_items.list(answer.id, order="asc"))
    assert [i.type for i in items] == ["message", "function_call", "function_call_output"]


def test_stream_through_the_upstream(front: openai.OpenAI) -> None:
    kinds = [e.type for e in front.responses.create(model=GROUP, input="Hi", max_output_tokens=16, stream=True)]
    assert kinds[:2] == ["response.created", "response.in_progress"] and "response.output_text.delta" in kinds
    assert kinds[-1] in ("response.completed", "response.incomplete")
