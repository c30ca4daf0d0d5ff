"""The local engine when the CPU is shared: thread settings side by side, quiet and with busy neighbours.

    .venv/bin/python bench/contention.py        # about 4 minutes on 2 cores

For each thread setting it starts `chatgate serve` and measures, with the machine as it is ("quiet")
and then with one busy process per core started by the bench (`while True: pass`, killed at the end
and bounded in time anyway):

- single-request latency: sequential streamed requests of --tokens tokens (greedy, end-of-turn banned),
  median over up to --latency-requests requests or --latency-seconds, whichever ends first (a request
  still running then is cut off and counts as ">= its time so far");
- throughput: a closed loop of --concurrency clients for --window seconds, output tokens received in
  the window per second.

The settings: today's default (every core, static), one thread, and the new default (every core,
adaptive: one thread while the CPU is shared). Ratios are printed side by side, and the report goes to --out.

On a machine that other work keeps busy, --isolate (root only) runs measurements with the bench's
scheduling group (the bench, the server and the busy processes) at nice -20 against the rest of the
machine: `--isolate quiet` makes the quiet runs stand for an idle machine; `--isolate all` makes the
busy runs "exactly one busy process per core" too (and starves the machine's other work meanwhile).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import EOS_BAN
from servers import PYTHON, chatgate, free_port, running

CORES = os.cpu_count() or 1
HOG = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"


@dataclass(frozen=True)
class Variant:
    name: str
    threads: int
    adaptive: bool


@dataclass
class Measure:
    latency: float  # median seconds of one request
    latencies: list[float]
    tokens_per_second: float
    text: str  # the greedy answer to the latency prompt ("" when none finished)
    cut: bool  # the last latency request was cut off: its time is a lower bound
    switches: tuple[int, int] = (0, 0)  # width changes and probes of the engine during the measurement


def body(tokens: int, topic: str) -> dict[str, Any]:
    return {"model": "gpt-4", "messages": [{"role": "user", "content": f"Write an essay about {topic}."}],
            "max_tokens": tokens, "temperature": 0, "logit_bias": EOS_BAN, "stream": True}  # fmt: skip


async def stream(client: httpx.AsyncClient, payload: dict[str, Any], counted: list[int]) -> str:
    """Stream one request; count each content chunk (one token) in ``counted[0]`` as it arrives."""
    pieces = []
    async with client.stream("POST", "/v1/chat/completions", json=payload) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:]).get("choices", []):
                    if content := choice.get("delta", {}).get("content"):
                        counted[0] += 1
                        pieces.append(content)
    return "".join(pieces)


async def latency(client: httpx.AsyncClient, args: argparse.Namespace) -> tuple[list[float], str, bool]:
    """Request latencies, the last answer, and whether the last request was cut off at the deadline."""
    times: list[float] = []
    text = ""
    deadline = time.monotonic() + args.latency_seconds
    while len(times) < args.latency_requests and time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            text = await asyncio.wait_for(stream(client, body(args.tokens, "bees"), [0]), deadline - time.monotonic())
        except TimeoutError:
            times.append(time.perf_counter() - start)
            return times, text, True
        times.append(time.perf_counter() - start)
    return times, text, False


async def throughput(base: str, args: argparse.Namespace) -> float:
    counted = [0]
    topics = ["bees", "volcanoes", "chess", "bread", "lighthouses", "coral reefs", "compasses", "Rome"]
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:

        async def client_loop(i: int) -> None:
            while True:
                await stream(client, body(args.tokens, topics[i % len(topics)]), counted)

        tasks = [asyncio.create_task(client_loop(i)) for i in range(args.concurrency)]
        await asyncio.sleep(args.window)
        got = counted[0]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return float(got / args.window)


async def measure(base: str, args: argparse.Namespace) -> Measure:
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        await stream(client, body(4, "warm-up"), [0])
        times, text, cut = await latency(client, args)
    return Measure(statistics.median(times), times, await throughput(base, args), text, cut)


@contextlib.contextmanager
def busy_neighbours(n: int, seconds: float) -> Iterator[None]:
    """``n`` processes spinning on the CPU until the block ends (and at most ``seconds``)."""
    hogs = [subprocess.Popen([PYTHON, "-c", HOG.format(seconds=seconds)]) for _ in range(n)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def set_group_nice(nice: int) -> None:
    """The nice value of this session's scheduling autogroup (the bench and its server): with
    autogroups on, a process's own nice value does not weigh against other sessions'."""
    Path("/proc/self/autogroup").write_text(f"{nice}\n")


@contextlib.contextmanager
def isolated(enabled: bool) -> Iterator[None]:
    """The bench and the server at nice -20 against the rest of the machine while the block runs."""
    if enabled:
        set_group_nice(-20)
    try:
        yield
    finally:
        if enabled:
            set_group_nice(0)


def switches(base: str) -> tuple[int, int]:
    """How many times the server's engine has changed its width, and probed the other one, so far."""
    counts = {}
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(("chatgate_engine_thread_switches_total{", "chatgate_engine_thread_probes_total{")):
            counts[line.split("{")[0]] = int(line.split()[-1])
    return counts.get("chatgate_engine_thread_switches_total", 0), counts.get("chatgate_engine_thread_probes_total", 0)


def run_variant(variant: Variant, args: argparse.Namespace, logs: Path) -> dict[str, Measure]:
    port = free_port()
    env = {"CHATGATE_ADAPTIVE_THREADS": "true" if variant.adaptive else "false", "CHATGATE_LEDGER": "false"}
    results: dict[str, Measure] = {}
    with running(chatgate(port, variant.threads), port, logs / f"{variant.name}.log", env) as base:
        print(f"{variant.name}: quiet (load {os.getloadavg()[0]:.2f}) ...", flush=True)
        with isolated(args.isolate != "none"):
            results["quiet"] = asyncio.run(measure(base, args))
        results["quiet"].switches = before = switches(base)
        print(f"{variant.name}: {CORES} busy processes ...", flush=True)
        with busy_neighbours(CORES, seconds=args.latency_seconds + args.window + 120), isolated(args.isolate == "all"):
            results["busy"] = asyncio.run(measure(base, args))
        after = switches(base)
        results["busy"].switches = (after[0] - before[0], after[1] - before[1])
    return results


def ge(m: Measure) -> str:
    return ">= " if m.cut and len(m.latencies) == 1 else ""


def report(results: dict[Variant, dict[str, Measure]], args: argparse.Namespace, started: str) -> list[str]:
    today = next(iter(results.values()))
    lines = [
        f"# chatgate contention bench, {started}",
        "",
        f"`{' '.join(sys.argv)}`: {CORES} cores; latency = median of sequential {args.tokens}-token requests; "
        f"throughput = output tok/s of {args.concurrency} clients over {args.window:g} s; busy = {CORES} "
        f"`while True: pass` processes. Load average at the end: {os.getloadavg()[0]:.2f}."
        + {"none": "", "quiet": " Quiet runs isolated (nice -20).", "all": " Every run isolated (nice -20)."}[
            args.isolate
        ],
        "",
        "| setting | latency quiet | latency busy | busy / quiet | tok/s quiet | tok/s busy | quiet tok/s vs today "
        "| width changes (probes) quiet / busy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, r in results.items():
        q, b = r["quiet"], r["busy"]
        lines.append(
            f"| {variant.name} | {ge(q)}{q.latency:.2f} s | {ge(b)}{b.latency:.2f} s | "
            f"{ge(b)}{b.latency / q.latency:.1f}x | "
            f"{q.tokens_per_second:.0f} | {b.tokens_per_second:.0f} | "
            f"{q.tokens_per_second / today['quiet'].tokens_per_second:.2f}x | "
            f"{q.switches[0]} ({q.switches[1]}) / {b.switches[0]} ({b.switches[1]}) |"
        )
    texts = {m.text for r in results.values() for m in r.values() if m.text}
    lines += ["", f"- greedy answers to the latency prompt identical across settings and load: {len(texts) == 1}"]
    lines += [f"- {v.name}: busy latencies {', '.join(f'{t:.2f}' for t in r['busy'].latencies)} s"
              for v, r in results.items()]  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--latency-requests", type=int, default=5)
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--isolate", choices=["none", "quiet", "all"], default="none",
                        help="runs at nice -20 against the rest of the machine (root only)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "contention-latest.md")
    args = parser.parse_args()
    variants = [
        Variant(f"today's default: {CORES} threads, static", CORES, adaptive=False),
        Variant("1 thread", 1, adaptive=False),
        Variant(f"new default: {CORES} threads, adaptive", CORES, adaptive=True),
    ]
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"chatgate-contention-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    results = {v: run_variant(v, args, logs) for v in variants}
    text = "\n".join(report(results, args, started)) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
