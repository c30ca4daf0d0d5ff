"""Streaming: byte-level SSE checks over raw HTTP, and the SDK's view of the same streams."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

STORY = [{"role": "user", "content": "Tell me a long story about a dragon and a castle."}]


def sse(http: httpx.Client, body: dict[str, Any]) -> tuple[httpx.Response, list[bytes]]:
    """POST a streamed request; return the response and its raw events (each ``data: ...``)."""
    payload = {"model": "gpt-4", "messages": STORY, "max_tokens": 12, "stream": True, **body}
    with http.stream("POST", "/v1/chat/completions", json=payload) as r:
        raw = r.read()
    assert raw.endswith(b"\n\n")
    return r, raw[:-2].split(b"\n\n")


def chunks(events: list[bytes]) -> list[dict[str, Any]]:
    assert events[-1] == b"data: [DONE]"
    out = []
    for event in events[:-1]:
        assert event.startswith(b"data: ")
        out.append(json.loads(event[len(b"data: ") :]))
    return out


def test_stream_is_well_formed_server_sent_events(http: httpx.Client) -> None:
    r, events = sse(http, {"temperature": 0})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-request-id"].startswith("req_")
    parsed = chunks(events)
    assert len({c["id"] for c in parsed}) == 1 and parsed[0]["id"].startswith("chatcmpl-")
    assert len({c["created"] for c in parsed}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in parsed)
    assert all(c["model"] == "smollm2-135m-instruct" for c in parsed)
    assert all("usage" not in c for c in parsed)  # not asked for: not present at all
    first, last = parsed[0]["choices"][0], parsed[-1]["choices"][0]
    assert first["delta"]["role"] == "assistant" and first["delta"]["content"] == ""
    assert all("role" not in c["choices"][0]["delta"] for c in parsed[1:])
    assert all(c["choices"][0]["finish_reason"] is None for c in parsed[:-1])
    assert last["delta"] == {} and last["finish_reason"] == "length"
    assert all(c["choices"][0]["delta"]["content"] for c in parsed[1:-1])  # incremental, non-empty


def test_include_usage_puts_null_usage_on_every_chunk_and_a_final_usage_chunk(http: httpx.Client) -> None:
    _, events = sse(http, {"temperature": 0, "stream_options": {"include_usage": True}})
    parsed = chunks(events)
    assert all(c["usage"] is None for c in parsed[:-1])
    final = parsed[-1]
    assert final["choices"] == []
    usage = final["usage"]
    assert usage["completion_tokens"] == 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + 12


def test_streamed_equals_non_streamed_for_the_same_seed(client: openai.OpenAI) -> None:
    args: dict[str, Any] = {"model": "gpt-4", "messages": STORY, "max_tokens": 30, "temperature": 0.9, "seed": 77}
    plain = client.chat.completions.create(**args)
    streamed = client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    for chunk in streamed:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert text == plain.choices[0].message.content
    assert finish == plain.choices[0].finish_reason
    assert usage is not None and plain.usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (plain.usage.prompt_tokens, plain.usage.completion_tokens)


def test_streamed_n_choices_each_start_with_role_and_end_with_finish_reason(http: httpx.Client) -> None:
    _, events = sse(http, {"n": 2, "temperature": 1.0, "seed": 3})
    parsed = chunks(events)
    for index in (0, 1):
        mine = [c["choices"][0] for c in parsed if c["choices"][0]["index"] == index]
        assert mine[0]["delta"]["role"] == "assistant"
        assert mine[-1]["finish_reason"] == "length"
        assert sum(1 for c in mine if c["finish_reason"]) == 1


def test_streamed_logprobs_match_streamed_content(http: httpx.Client) -> None:
    _, events = sse(http, {"temperature": 0, "logprobs": True, "top_logprobs": 2})
    content_chunks = [c["choices"][0] for c in chunks(events)[1:-1]]
    for choice in content_chunks:
        tokens = "".join(t["token"] for t in choice["logprobs"]["content"])
        assert tokens == choice["delta"]["content"]
        assert all(len(t["top_logprobs"]) == 2 for t in choice["logprobs"]["content"])


def test_stop_sequences_never_leak_into_a_stream(http: httpx.Client, client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model="gpt-4", messages=STORY, max_tokens=30, temperature=0)  # type: ignore[arg-type]
    content = full.choices[0].message.content
    assert content
    stop = content[8:11]
    _, events = sse(http, {"temperature": 0, "max_tokens": 30, "stop": [stop]})
    parsed = chunks(events)
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in parsed)
    assert streamed == content[: content.index(stop)]
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"


def test_errors_found_before_streaming_get_a_real_status(http: httpx.Client) -> None:
    payload = {"model": "nope", "messages": STORY, "stream": True}
    r = http.post("/v1/chat/completions", json=payload)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    r = http.post(
        "/v1/chat/completions",
        json={**payload, "model": "gpt-4", "messages": [{"role": "user", "content": "dragon " * 3000}]},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v1/chat/completions"])
def test_both_paths_stream(http: httpx.Client, path: str) -> None:
    payload = {"model": "gpt-4", "messages": STORY, "max_tokens": 3, "stream": True}
    with http.stream("POST", path, json=payload) as r:
        assert r.status_code == 200
        assert r.read().endswith(b"data: [DONE]\n\n")


def test_async_client_streams(base_url: str) -> None:
    asyncio.run(_async_client_streams(base_url))


async def _async_client_streams(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x") as client:
        args: dict[str, Any] = {"model": "gpt-4", "messages": STORY, "max_tokens": 8, "temperature": 0}
        stream = await client.chat.completions.create(**args, stream=True)
        pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
        plain = await client.chat.completions.create(**args)
    assert "".join(pieces) == plain.choices[0].message.content
