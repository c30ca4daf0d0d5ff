"""Many clients at once: every one gets its own correct answer, and the event loop stays free."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai

PROMPTS = [f"Write a sentence about the number {i}." for i in range(10)]


def request(i: int) -> dict[str, Any]:
    return {"model": "gpt-4", "messages": [{"role": "user", "content": PROMPTS[i]}], "max_tokens": 16, "temperature": 0}


def test_ten_concurrent_clients_all_get_correct_answers(client: openai.OpenAI, base_url: str) -> None:
    alone = [client.chat.completions.create(**request(i)).choices[0].message.content for i in range(10)]

    async def together() -> list[str | None]:
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as ac:
            results = await asyncio.gather(*(ac.chat.completions.create(**request(i)) for i in range(10)))
        return [r.choices[0].message.content for r in results]

    assert asyncio.run(together()) == alone


def test_the_server_answers_health_while_generating(base_url: str) -> None:
    async def run() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
            long = http.post("/v1/chat/completions", json={**request(0), "max_tokens": 300, "logit_bias": {"2": -100}})
            task = asyncio.ensure_future(long)
            for _ in range(600):
                health = (await http.get("/health")).json()
                if health["engines"]["smollm2-135m-instruct"]["running"]:
                    break
                await asyncio.sleep(0.02)
            assert health["engines"]["smollm2-135m-instruct"]["running"] == 1
            assert not task.done()  # health answered while the engine was busy
            assert (await task).status_code == 200

    asyncio.run(run())
