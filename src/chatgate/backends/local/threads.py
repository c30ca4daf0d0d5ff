"""How many CPU threads the next decode step uses: every core while the CPU is ours, one when it is shared.

llama.cpp's CPU backend (an OpenMP build in llama-cpp-python's wheels) splits each graph node across
its threads and joins them at a barrier after every node, a few hundred times per decode step. A
waiting thread spins (libgomp's ``pause`` loop) until the others arrive, so when another process
takes one of the cores, each barrier waits for a descheduled thread to be given a core again: a step
that takes 8 ms on a quiet 2-core machine takes 100-200 ms (sometimes 2 s) with one busy process per
core, about 20x slower. A single thread never waits at a barrier and slows down only by its share of
the CPU (about 1.5x with one busy process per core).

:class:`ThreadGovernor` chooses the width of each step from the steps themselves:

- at full width, the engine thread is on a CPU for the whole of a step unless the CPU is shared (it
  computes or spins at a barrier, never sleeps), so two steps in a row during which it ran less than
  ``min_share`` of the time drop the width to one thread at once;
- at one thread, from time to time one step runs at full width (a probe), and the full width comes
  back when that step was clearly faster than the recent one-thread steps of the same size. A failed
  probe doubles the time to the next one (up to ``max_probe_seconds``), and so does a contention that
  comes back soon after a successful probe, so a long contention costs one slow step every 16 s.

Greedy output does not depend on the width: each row of a matrix product is computed by one
thread, whatever their number.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ThreadPolicy:
    """The engine's thread settings."""

    max_threads: int
    """The width when the CPU is not shared (``threads``; every core by default)."""
    adaptive: bool = True
    """Drop to one thread while the CPU is shared (``adaptive_threads``); ``False`` keeps ``max_threads``."""
    probe_seconds: float = 1.0
    """Time from a drop to one thread to the first probe back to full width."""
    max_probe_seconds: float = 16.0
    """The longest time between probes, reached by doubling after each failed one."""
    min_share: float = 0.75
    """A full-width step during which the engine thread was on a CPU less than this share of the time
    counts as contended."""
    win_factor: float = 0.8
    """A probe wins when it took less than this fraction of the recent one-thread steps' median."""


Size = int  # a batch size class: n_tokens.bit_length(), so 1, 2-3, 4-7, 8-15, ... compare together
SAMPLES = 16  # one-thread steps remembered per size class
RECENT = 5  # of which the last few make the "recent median"


@dataclass
class ThreadGovernor:
    """Per-step choice of the engine's width, from the measured times of its own decode steps."""

    policy: ThreadPolicy
    current: int = 0
    switches: int = 0
    _next_probe: float = 0.0
    _interval: float = 0.0
    _raised_at: float = 0.0
    _slow_streak: int = 0
    _samples: dict[Size, deque[float]] = field(default_factory=dict)
    """Recent one-thread step times per size class, for judging probes."""

    def __post_init__(self) -> None:
        self.current = self.policy.max_threads
        self._interval = self.policy.probe_seconds

    @property
    def adaptive(self) -> bool:
        return self.policy.adaptive and self.policy.max_threads > 1

    def threads(self, n_tokens: int, now: float) -> int:
        """The width of a step of ``n_tokens`` tokens starting now (full width when a probe is due)."""
        if self.current == 1 and now >= self._next_probe and self._samples.get(n_tokens.bit_length()):
            return self.policy.max_threads
        return self.current

    def observe(self, threads: int, n_tokens: int, seconds: float, cpu_seconds: float, now: float) -> None:
        """Record a step of ``n_tokens`` tokens that ran ``threads`` wide: ``seconds`` of wall time,
        ``cpu_seconds`` of the engine thread's CPU time. ``now`` is when it ended."""
        if not self.adaptive or n_tokens <= 0 or seconds <= 0:
            return
        size = n_tokens.bit_length()
        if threads == 1:
            self._samples.setdefault(size, deque(maxlen=SAMPLES)).append(seconds)
        elif self.current == 1:
            self._judge_probe(size, seconds, now)
        elif cpu_seconds < self.policy.min_share * seconds:
            self._slow_streak += 1
            if self._slow_streak >= 2:
                self._drop(now)
        else:
            self._slow_streak = 0

    def _judge_probe(self, size: Size, seconds: float, now: float) -> None:
        recent = statistics.median(list(self._samples[size])[-RECENT:])
        if seconds < self.policy.win_factor * recent:
            self.current = self.policy.max_threads
            self.switches += 1
            self._raised_at = now
        else:
            self._interval = min(self._interval * 2, self.policy.max_probe_seconds)
            self._next_probe = now + self._interval

    def _drop(self, now: float) -> None:
        if now - self._raised_at >= self.policy.max_probe_seconds:
            self._interval = self.policy.probe_seconds  # a new contention
        else:  # back soon after the last probe won: wait longer before the next one
            self._interval = min(self._interval * 2, self.policy.max_probe_seconds)
        self.current = 1
        self.switches += 1
        self._slow_streak = 0
        self._next_probe = now + self._interval
