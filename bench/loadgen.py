"""A load generator that speaks OpenAI's streaming Chat Completions API over HTTP.

It measures, per request, the time to the first content token (TTFT), the time per output token
after the first (TPOT) and the number of tokens the server really sent, and per run the aggregate
output tokens/s and requests/s. The count is the stream's ``usage.completion_tokens`` (asked for with
``stream_options.include_usage``) when the server reports it, else the number of content deltas; never
``max_tokens``, so that a server that stops early cannot look faster.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx

EOS_BAN = {"2": -100}  # SmolLM2's <|im_end|>: every request generates exactly max_tokens


@dataclass
class RequestResult:
    ttft: float
    tpot: float
    tokens: int
    latency: float
    text: str
    counted: str = "usage"
    """Where ``tokens`` came from: ``"usage"`` (the server's own count) or ``"deltas"`` (content chunks)."""


@dataclass
class RunResult:
    concurrency: int
    requests: list[RequestResult]
    wall: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.wall

    @property
    def requests_per_second(self) -> float:
        return len(self.requests) / self.wall

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.requests)

    @property
    def counted(self) -> str:
        """How the tokens were counted: ``usage``, ``deltas`` or ``usage+deltas``."""
        return "+".join(sorted({r.counted for r in self.requests}, reverse=True))

    def ttft(self, q: float) -> float:
        return percentile([r.ttft for r in self.requests], q)

    def tpot(self, q: float) -> float:
        return percentile([r.tpot for r in self.requests], q)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1] if q < 100 else ordered[-1]


async def stream_one(client: httpx.AsyncClient, body: dict[str, Any]) -> RequestResult:
    """Send one streamed request; time its first content token and every one after, and count its tokens."""
    start = time.perf_counter()
    first: float | None = None
    last = start
    pieces: list[str] = []
    chunks = 0
    usage: int | None = None
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=payload) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"stream error: {event['error']}")
            if isinstance(event.get("usage"), dict) and event["usage"].get("completion_tokens") is not None:
                usage = int(event["usage"]["completion_tokens"])
            for choice in event.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    now = time.perf_counter()
                    first = first if first is not None else now
                    last = now
                    chunks += 1
                    pieces.append(content)
    end = time.perf_counter()
    tokens = usage if usage is not None else chunks
    ttft = (first or end) - start
    tpot = (last - first) / (tokens - 1) if first is not None and tokens > 1 else 0.0
    return RequestResult(
        ttft=ttft,
        tpot=tpot,
        tokens=tokens,
        latency=end - start,
        text="".join(pieces),
        counted="usage" if usage is not None else "deltas",
    )


async def run_level(base_url: str, bodies: list[dict[str, Any]], concurrency: int) -> RunResult:
    """Send every body, ``concurrency`` at a time (a closed loop of that many clients)."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    results: list[RequestResult] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                results.append(await stream_one(client, body))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return RunResult(concurrency=concurrency, requests=results, wall=wall)
