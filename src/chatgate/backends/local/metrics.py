"""Engine counters and latency histograms, written by the engine thread, read by anyone."""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass, field

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)


@dataclass
class Histogram:
    """A Prometheus-style histogram: cumulative buckets, sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip((*[f"{b:g}" for b in self.bounds], "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class EngineStats:
    """What the engine has done and is doing."""

    running: int = 0
    waiting: int = 0
    jobs_done: int = 0
    tokens_generated: int = 0
    prompt_tokens_processed: int = 0
    prompt_tokens_reused: int = 0
    preemptions: int = 0
    decode_steps: int = 0
    kv_cells_used: int = 0
    kv_cells_total: int = 0
    threads: int = 0
    """The width of the last decode step (see :mod:`chatgate.backends.local.threads`)."""
    thread_switches: int = 0
    thread_probes: int = 0
    ttft_seconds: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    time_per_token_seconds: Histogram = field(default_factory=lambda: Histogram(TOKEN_BUCKETS))
    recent: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=4096))
    """(time, tokens) of recent decode steps, for the current generation rate."""

    def record_step(self, tokens: int) -> None:
        self.recent.append((time.monotonic(), tokens))

    def tokens_per_second(self, window: float = 10.0) -> float:
        """Tokens generated per second over the last ``window`` seconds."""
        since = time.monotonic() - window
        return sum(n for t, n in list(self.recent) if t >= since) / window

    def summary(self) -> dict[str, int]:
        """The plain counters, for /health."""
        return {
            "running": self.running,
            "waiting": self.waiting,
            "jobs_done": self.jobs_done,
            "tokens_generated": self.tokens_generated,
            "prompt_tokens_processed": self.prompt_tokens_processed,
            "prompt_tokens_reused": self.prompt_tokens_reused,
            "preemptions": self.preemptions,
            "kv_cells_used": self.kv_cells_used,
            "kv_cells_total": self.kv_cells_total,
        }
