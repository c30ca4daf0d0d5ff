"""How many CPU threads the next decode step uses: every core while the CPU is ours, one when it is shared.

llama.cpp's CPU backend (an OpenMP build in llama-cpp-python's wheels) splits each graph node across
its threads and joins them at a barrier after every node, a few hundred times per decode step. A
waiting thread spins (libgomp's ``pause`` loop) until the others arrive, so when another process
takes one of the cores, each barrier waits for a descheduled thread to be given a core again: a step
that takes 8 ms on a quiet 2-core machine takes 100-200 ms (sometimes 2 s) with one busy process per
core, about 20x slower. A single thread never waits at a barrier and slows down only by its share of
the CPU (about 1.5x with one busy process per core).

:class:`ThreadGovernor` chooses the width of each step by trying the other width for one step (a
probe) when there is a reason to, and keeping it when that step was clearly faster than the last
steps of the same size at the current width:

- at full width, the engine thread is on a CPU for the whole of a step unless the CPU is shared (it
  computes or spins at a barrier, never sleeps), so two steps in a row during which it ran less than
  ``min_share`` of the time are followed by a one-thread probe (at most one per ``probe_seconds``;
  when it loses, it cost one step at one thread);
- at one thread, a probe at full width (which costs one slow step when the CPU is still shared) runs
  only when the CPU had idle capacity for the other threads since the last check (from
  ``/proc/stat``), at least ``probe_seconds`` after the drop; a failed probe doubles the wait before
  the next one (up to ``max_probe_seconds``).

Greedy output does not depend on the width: each row of a matrix product is computed by one
thread, whatever their number.
"""

from __future__ import annotations

import os
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ThreadPolicy:
    """The engine's thread settings."""

    max_threads: int
    """The width when the CPU is not shared (``threads``; every core by default)."""
    adaptive: bool = True
    """Drop to one thread while the CPU is shared (``adaptive_threads``); ``False`` keeps ``max_threads``."""
    probe_seconds: float = 1.0
    """The least time between two probes."""
    max_probe_seconds: float = 16.0
    """The longest wait between probes back to full width, reached by doubling after each failed one."""
    min_share: float = 0.75
    """A full-width step during which the engine thread was on a CPU less than this share of the time
    is followed by a one-thread probe."""
    idle_share: float = 0.5
    """At one thread, a probe back to full width waits for this much idle CPU per extra thread."""
    win_factor: float = 0.8
    """A probe wins when it took less than this fraction of the median of the current width's last three
    steps of its size."""


Size = int  # a batch size class: n_tokens.bit_length(), so 1, 2-3, 4-7, 8-15, ... compare together
SAMPLES = 8  # steps remembered per (width, size class)
RECENT = 3  # of which the median of the last three is the time a probe is compared with


class IdleMeter:
    """Idle CPU (in cores) since the last reading, from ``/proc/stat``; ``None`` where unreadable."""

    def __init__(self, path: str = "/proc/stat") -> None:
        self._path = path
        self._last = self._read()

    def _read(self) -> tuple[float, float] | None:
        try:
            with open(self._path, encoding="ascii") as stat:
                fields = [int(x) for x in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        if len(fields) < 5:
            return None
        idle = fields[3] + fields[4]  # idle + iowait, in clock ticks summed over every CPU
        return float(idle), float(sum(fields[:8])) / (os.cpu_count() or 1)

    def idle_cores(self) -> float | None:
        """Cores idle on average since the previous call (or since this meter was made)."""
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[1] <= last[1]:
            return None
        return (now[0] - last[0]) / (now[1] - last[1])


@dataclass
class ThreadGovernor:
    """Per-step choice of the engine's width, from the measured times of its own decode steps."""

    policy: ThreadPolicy
    idle: Callable[[], float | None] = field(default_factory=lambda: IdleMeter().idle_cores)
    """Idle CPU in cores since its previous call (``None``: unknown, probe on the timer alone)."""
    current: int = 0
    switches: int = 0
    probes: int = 0
    _probe_due: bool = False
    _low_streak: int = 0
    _next_probe: float = 0.0
    _backoff: float = 0.0
    _samples: dict[tuple[int, Size], deque[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.current = self.policy.max_threads
        self._backoff = self.policy.probe_seconds

    @property
    def adaptive(self) -> bool:
        return self.policy.adaptive and self.policy.max_threads > 1

    def threads(self, n_tokens: int, now: float) -> int:
        """The width of a step of ``n_tokens`` tokens starting now (the other width for a probe)."""
        if not self.adaptive or not self._samples.get((self.current, n_tokens.bit_length())):
            return self.current  # nothing to compare a probe with
        if self.current == 1:
            if now >= self._next_probe and self._room(now):
                return self.policy.max_threads
        elif self._probe_due:
            self._probe_due = False
            return 1
        return self.current

    def _room(self, now: float) -> bool:
        """Whether the CPU had idle capacity for the other threads since the last check."""
        idle = self.idle()
        if idle is None or idle >= self.policy.idle_share * (self.policy.max_threads - 1):
            return True
        self._next_probe = now + self.policy.probe_seconds  # look again later; no probe spent
        return False

    def observe(self, threads: int, n_tokens: int, seconds: float, cpu_seconds: float, now: float) -> None:
        """Record a step of ``n_tokens`` tokens that ran ``threads`` wide: ``seconds`` of wall time,
        ``cpu_seconds`` of the engine thread's CPU time. ``now`` is when it ended."""
        if not self.adaptive or n_tokens <= 0 or seconds <= 0:
            return
        size = n_tokens.bit_length()
        if threads != self.current:
            self.probes += 1
            self._judge_probe(threads, size, seconds, now)
        elif threads > 1:
            low = cpu_seconds < self.policy.min_share * seconds
            self._low_streak = self._low_streak + 1 if low else 0
            if self._low_streak >= 2 and now >= self._next_probe:
                self._probe_due = True
                self._next_probe = now + self.policy.probe_seconds
        self._samples.setdefault((threads, size), deque(maxlen=SAMPLES)).append(seconds)

    def _judge_probe(self, threads: int, size: Size, seconds: float, now: float) -> None:
        recent = statistics.median(list(self._samples[(self.current, size)])[-RECENT:])
        if seconds < self.policy.win_factor * recent:
            self.current = threads
            self.switches += 1
            if threads == 1:  # dropped: the first look back after probe_seconds
                self._backoff = self.policy.probe_seconds
                self._next_probe = now + self._backoff
                self.idle()  # idle capacity counts from now
            else:
                self._next_probe = now + self.policy.probe_seconds
        elif threads > 1:
            self._backoff = min(self._backoff * 2, self.policy.max_probe_seconds)
            self._next_probe = now + self._backoff
