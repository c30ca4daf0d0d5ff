"""A client that goes away stops its generation and frees the engine for the next request."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import openai

EOS = 2
LONG: dict[str, Any] = {
    "model": "gpt-4",
    "messages": [{"role": "user", "content": "Tell me a long story."}],
    "max_tokens": 1500,
    "temperature": 0,
    "logit_bias": {str(EOS): -100},  # no natural end: only max_tokens or a disconnect stops it
}


def engine(http: httpx.Client) -> dict[str, Any]:
    stats: dict[str, Any] = http.get("/health").json()["engines"]["smollm2-135m-instruct"]
    return stats


def wait_idle(http: httpx.Client) -> dict[str, Any]:
    for _ in range(600):  # a hang guard, not a speed bound
        stats = engine(http)
        if stats["running"] == 0 and stats["waiting"] == 0:
            return stats
        time.sleep(0.05)
    raise AssertionError("the engine never went idle")


def test_closing_a_stream_stops_generation(http: httpx.Client, client: openai.OpenAI) -> None:
    before = wait_idle(http)
    with (
        httpx.Client(base_url=str(http.base_url), timeout=60) as other,
        other.stream("POST", "/v1/chat/completions", json={**LONG, "stream": True}) as r,
    ):
        lines = r.iter_lines()
        seen = 0
        for line in lines:
            if line.startswith("data: "):
                seen += 1
            if seen >= 5:
                break
    after = wait_idle(http)
    generated = after["tokens_generated"] - before["tokens_generated"]
    assert 4 <= generated < 1500
    r2 = client.chat.completions.create(**{**LONG, "max_tokens": 3})
    assert r2.choices[0].finish_reason == "length"


def test_abandoning_a_non_streamed_request_stops_generation(http: httpx.Client) -> None:
    before = wait_idle(http)
    host, port = http.base_url.host, http.base_url.port
    assert port is not None
    body = httpx.Request("POST", f"http://{host}:{port}/v1/chat/completions", json=LONG)
    raw = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body.read())}\r\n\r\n"
    ).encode() + body.read()
    with socket.create_connection((host, port)) as sock:
        sock.sendall(raw)
        for _ in range(600):  # until generation has begun
            if engine(http)["running"]:
                break
            time.sleep(0.02)
        time.sleep(0.3)
    after = wait_idle(http)
    generated = after["tokens_generated"] - before["tokens_generated"]
    assert 1 <= generated < 1500
    assert after["jobs_done"] == before["jobs_done"] + 1
