"""Continuous batching seen from clients: mixed concurrent requests, cancellation, metrics."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import openai

STORY = "Tell me a story about a dragon and a castle."
REQUESTS: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": STORY}], "max_tokens": 20, "temperature": 0},
    {"messages": [{"role": "user", "content": "List three fruits."}], "max_tokens": 12, "temperature": 0},
    {"messages": [{"role": "user", "content": STORY}], "max_tokens": 25, "temperature": 0.8, "seed": 11},
    {"messages": [{"role": "user", "content": "Describe the sea."}], "max_tokens": 30, "temperature": 1.0, "seed": 5,
     "extra_body": {"top_k": 40, "min_p": 0.05}},
    {"messages": [{"role": "user", "content": "Describe the sea."}], "max_tokens": 30, "temperature": 0,
     "frequency_penalty": 1.5, "presence_penalty": 0.5},
    {"messages": [{"role": "user", "content": "Write a poem."}], "max_tokens": 16, "temperature": 0, "stop": [","]},
    {"messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 10, "temperature": 0, "logprobs": True,
     "top_logprobs": 2},
    {"messages": [{"role": "user", "content": STORY}], "max_tokens": 15, "temperature": 0.9, "seed": 2, "n": 2},
    {"messages": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"}],
     "max_tokens": 18, "temperature": 0, "extra_body": {"repetition_penalty": 1.3}},
    {"messages": [{"role": "user", "content": "Name a color."}], "max_tokens": 8, "temperature": 0,
     "logit_bias": {"2": -100}},
    {"messages": [{"role": "user", "content": "Explain gravity."}], "max_tokens": 40, "temperature": 0},
    {"messages": [{"role": "user", "content": "Explain gravity."}], "max_tokens": 40, "temperature": 0.7, "seed": 9},
]  # fmt: skip


async def run_one(client: openai.AsyncOpenAI, body: dict[str, Any], stream: bool) -> list[tuple[str, str | None]]:
    if not stream:
        r = await client.chat.completions.create(model="gpt-4", **body)
        return [(c.message.content or "", c.finish_reason) for c in sorted(r.choices, key=lambda c: c.index)]
    texts: dict[int, str] = {}
    finishes: dict[int, str | None] = {}
    stream_ = await client.chat.completions.create(model="gpt-4", stream=True, **body)
    async for chunk in stream_:
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            finishes[c.index] = c.finish_reason or finishes.get(c.index)
    return [(texts[i], finishes[i]) for i in sorted(texts)]


def test_mixed_concurrent_requests_get_the_same_answers_as_alone(base_url: str) -> None:
    async def scenario() -> tuple[list[Any], list[Any]]:
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as client:
            alone = [await run_one(client, body, stream=False) for body in REQUESTS]
            together = await asyncio.gather(
                *(run_one(client, body, stream=i % 2 == 1) for i, body in enumerate(REQUESTS))
            )
        return alone, list(together)

    alone, together = asyncio.run(scenario())
    assert together == alone


def test_cancelling_one_stream_does_not_disturb_the_others(base_url: str) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": STORY}], "max_tokens": 60, "temperature": 0,
                            "logit_bias": {"2": -100}}  # fmt: skip
    others = [{**body, "messages": [{"role": "user", "content": f"{STORY} Chapter {i}."}]} for i in range(3)]

    async def scenario() -> tuple[list[Any], list[Any]]:
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as client:
            alone = [await run_one(client, b, stream=False) for b in others]

            async def cancelled() -> None:
                stream = await client.chat.completions.create(model="gpt-4", stream=True, **body)
                seen = 0
                async for _ in stream:
                    seen += 1
                    if seen == 3:
                        await stream.close()
                        return

            results = await asyncio.gather(cancelled(), *(run_one(client, b, stream=True) for b in others))
        return alone, list(results[1:])

    alone, together = asyncio.run(scenario())
    assert together == alone


def test_metrics_are_exposed_in_prometheus_format(http: httpx.Client) -> None:
    http.post("/v1/chat/completions", json={"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}],
                                            "max_tokens": 3})  # fmt: skip
    r = http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ("chatgate_requests_running", "chatgate_requests_waiting", "chatgate_generated_tokens_total",
                 "chatgate_prefix_cache_hit_tokens_total", "chatgate_kv_cache_usage_ratio",
                 "chatgate_generation_tokens_per_second", "chatgate_engine_threads",
                 "chatgate_engine_thread_switches_total", "chatgate_engine_thread_probes_total"):  # fmt: skip
        assert re.search(rf'^{name}{{model="smollm2-135m-instruct"}} [0-9.e+-]+$', text, re.M), name
    generated = re.search(r'^chatgate_generated_tokens_total{model="[^"]+"} (\d+)$', text, re.M)
    assert generated and int(generated.group(1)) >= 3
    count = re.search(r'^chatgate_time_to_first_token_seconds_count{model="[^"]+"} (\d+)$', text, re.M)
    assert count and int(count.group(1)) >= 1
    assert 'chatgate_time_per_output_token_seconds_bucket{model="smollm2-135m-instruct",le="+Inf"}' in text
    assert re.search(r'^chatgate_engine_threads{model="[^"]+"} 1$', text, re.M)  # the tests' servers use one
