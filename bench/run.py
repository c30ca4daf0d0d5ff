"""chatgate's local engine against llama-cpp-python's own OpenAI server, side by side, one run.

    .venv/bin/python bench/run.py            # or: make bench

Both servers serve the same GGUF (the embedded SmolLM2-135M-Instruct) with the same thread count,
one after the other on the same machine, and are driven by the same OpenAI streaming load generator
(greedy, every request generating exactly --max-tokens tokens). Then a multi-turn scenario shows the
TTFT of a growing conversation with chatgate's prefix cache on and off. Results are printed as a
table with chatgate/peer ratios and written to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from chatgate.backends.local import embedded_model_path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import EOS_BAN, RunResult, run_level, stream_one
from servers import chatgate, free_port, llama_cpp_server, running

TOPICS = [
    "the history of the printing press", "how bees make honey", "why the sky is blue", "the rules of chess",
    "how a bicycle stays upright", "the water cycle", "volcanoes", "the life of a lighthouse keeper",
    "how bread rises", "the moons of Jupiter", "a day in ancient Rome", "how compasses work",
    "the migration of birds", "how to plant a tree", "the invention of the telephone", "coral reefs",
]  # fmt: skip
SYSTEM = "You are a patient assistant who answers questions about a small seaside town called Port Ellery. " + " ".join(
    f"Fact {i}: the town's street number {i} is lined with {['oak', 'pine', 'elm'][i % 3]} trees "
    f"and has {i % 7 + 1} bakeries."
    for i in range(60)
)  # a long shared prefix (~1,500 tokens) so that prefill cost shows in the multi-turn scenario


def bodies(n: int, max_tokens: int) -> list[dict[str, Any]]:
    def ask(topic: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"Write an essay about {topic}."}]

    return [
        {"model": "gpt-4", "messages": ask(TOPICS[i % len(TOPICS)]), "max_tokens": max_tokens, "temperature": 0,
         "logit_bias": EOS_BAN}
        for i in range(n)
    ]  # fmt: skip


async def throughput(base: str, args: argparse.Namespace) -> dict[int, RunResult]:
    work = bodies(args.requests, args.max_tokens)
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        await stream_one(client, {**work[0], "max_tokens": 4})  # warm-up
    return {c: await run_level(base, work, c) for c in args.levels}


async def multi_turn(base: str, turns: int) -> list[float]:
    """TTFT of each turn of one growing conversation (greedy, 32-token replies)."""
    messages: list[dict[str, str]] = [{"role": "system", "content": SYSTEM}]
    ttfts = []
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        for turn in range(turns):
            messages.append({"role": "user", "content": f"Tell me about street number {turn * 5 + 3}."})
            body = {"model": "gpt-4", "messages": messages, "max_tokens": 32, "temperature": 0, "logit_bias": EOS_BAN}
            result = await stream_one(client, body)
            ttfts.append(result.ttft)
            messages.append({"role": "assistant", "content": result.text})
    return ttfts


def run_server(cmd: list[str], port: int, log: Path, job: Any) -> Any:
    with running(cmd, port, log) as base:
        return asyncio.run(job(base))


def table(results: dict[str, dict[int, RunResult]], levels: list[int]) -> list[str]:
    head = "| concurrency | server | output tok/s | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 | req/s |"
    lines = [head, "|" + "---|" * 8]
    for c in levels:
        for name, runs in results.items():
            r = runs[c]
            lines.append(
                f"| {c} | {name} | {r.tokens_per_second:.1f} | {r.ttft(50):.2f} s | {r.ttft(99):.2f} s | "
                f"{r.tpot(50) * 1000:.1f} ms | {r.tpot(99) * 1000:.1f} ms | {r.requests_per_second:.2f} |"
            )
    return lines


def ratios(ours: dict[int, RunResult], peer: dict[int, RunResult], levels: list[int]) -> list[str]:
    lines = ["| concurrency | tok/s ratio (higher is better) | TTFT p99 ratio (lower is better) |", "|---|---|---|"]
    for c in levels:
        lines.append(
            f"| {c} | {ours[c].tokens_per_second / peer[c].tokens_per_second:.2f}x | "
            f"{ours[c].ttft(99) / peer[c].ttft(99):.2f}x |"
        )
    return lines


def determinism(runs: dict[int, RunResult], levels: list[int]) -> list[str]:
    alone = sorted(r.text for r in runs[levels[0]].requests)
    out = []
    for c in levels[1:]:
        together = sorted(r.text for r in runs[c].requests)
        same = sum(a == b for a, b in zip(alone, together, strict=True))
        out.append(f"- greedy outputs at concurrency {c} identical to concurrency {levels[0]}: {same}/{len(alone)}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8, 16])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "latest.md")
    args = parser.parse_args()

    model = embedded_model_path()
    tmp = Path(tempfile.mkdtemp(prefix="chatgate-bench-"))
    no_cache = tmp / "no-prefix-cache.yaml"
    no_cache.write_text("models:\n  - id: smollm2-135m-instruct\n    prefix_cache: false\n")
    started = time.strftime("%Y-%m-%d %H:%M:%S")

    results: dict[str, dict[int, RunResult]] = {}
    port = free_port()
    print(f"chatgate on :{port} ...", flush=True)
    results["chatgate"] = run_server(
        chatgate(port, args.threads), port, tmp / "chatgate.log", lambda b: throughput(b, args)
    )
    port = free_port()
    print(f"llama-cpp-python server on :{port} ...", flush=True)
    peer_cmd = llama_cpp_server(port, args.threads, model, 4096)
    results["llama-cpp-python"] = run_server(peer_cmd, port, tmp / "peer.log", lambda b: throughput(b, args))

    print("multi-turn ...", flush=True)
    turns: dict[str, list[float]] = {}
    port = free_port()
    turns["chatgate, prefix cache on"] = run_server(chatgate(port, args.threads), port, tmp / "mt-on.log",
                                                    lambda b: multi_turn(b, args.turns))  # fmt: skip
    port = free_port()
    turns["chatgate, prefix cache off"] = run_server(chatgate(port, args.threads, no_cache), port, tmp / "mt-off.log",
                                                     lambda b: multi_turn(b, args.turns))  # fmt: skip

    on, off = turns["chatgate, prefix cache on"], turns["chatgate, prefix cache off"]
    report = [
        f"# chatgate bench, {started}",
        "",
        f"`{' '.join(sys.argv)}`: {args.requests} streamed requests of {args.max_tokens} tokens per level, greedy, "
        f"{args.threads} threads, model {model.name}.",
        "",
        *table(results, args.levels),
        "",
        "chatgate / llama-cpp-python:",
        "",
        *ratios(results["chatgate"], results["llama-cpp-python"], args.levels),
        "",
        *determinism(results["chatgate"], args.levels),
        "",
        f"Multi-turn ({args.turns} turns, ~1,500-token system prompt, 32-token replies), TTFT per turn in seconds:",
        "",
        "| turn | " + " | ".join(str(i + 1) for i in range(args.turns)) + " |",
        "|---|" + "---|" * args.turns,
        *[f"| {name} | " + " | ".join(f"{t:.2f}" for t in ts) + " |" for name, ts in turns.items()],
        "",
        f"TTFT of turn {args.turns}, cache on / off: {on[-1] / off[-1]:.2f}x",
    ]
    text = "\n".join(report) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
