"""The thread governor's choices, fed with step timings like those measured on a 2-core machine
(8 ms quiet at two threads, 16 ms at one; 100-300 ms at two threads with a busy process per core)."""

from __future__ import annotations

from chatgate.backends.local.threads import ThreadGovernor, ThreadPolicy

QUIET_2, QUIET_1, BUSY_2, BUSY_1 = 0.008, 0.016, 0.2, 0.025


def run(gov: ThreadGovernor, steps: int, now: float, *, busy: bool, n_tokens: int = 1) -> tuple[float, list[int]]:
    """Drive ``steps`` decode steps through the governor; return the clock and each step's width."""
    widths = []
    for _ in range(steps):
        threads = gov.threads(n_tokens, now)
        if threads == 1:
            seconds = BUSY_1 if busy else QUIET_1
            cpu = seconds * (0.67 if busy else 1.0)
        else:
            seconds = BUSY_2 if busy else QUIET_2
            cpu = seconds * (0.3 if busy else 0.98)
        now += seconds
        gov.observe(threads, n_tokens, seconds, cpu, now)
        widths.append(threads)
    return now, widths


def test_a_quiet_cpu_keeps_every_thread() -> None:
    gov = ThreadGovernor(ThreadPolicy(max_threads=2))
    _, widths = run(gov, 2000, 0.0, busy=False)
    assert set(widths) == {2}
    assert gov.switches == 0


def test_a_shared_cpu_drops_to_one_thread_after_two_slow_steps() -> None:
    gov = ThreadGovernor(ThreadPolicy(max_threads=2))
    now, _ = run(gov, 100, 0.0, busy=False)
    _, widths = run(gov, 200, now, busy=True)
    assert widths[:3] == [2, 2, 1]
    assert gov.current == 1


def test_under_long_contention_probes_back_off_to_one_slow_step_every_16_seconds() -> None:
    gov = ThreadGovernor(ThreadPolicy(max_threads=2))
    _, widths = run(gov, 4000, 0.0, busy=True)  # 100 s of contention
    probes = widths[2:].count(2)
    assert 4 <= probes <= 1 + 100 / 16 + 5  # 1, 2, 4, 8, then every 16 s
    # the last minute: only the probes every 16 s run wide
    tail = widths[-2400:]
    assert 2 <= tail.count(2) <= 5


def test_when_the_cpu_is_free_again_the_next_probe_restores_every_thread() -> None:
    gov = ThreadGovernor(ThreadPolicy(max_threads=2, probe_seconds=1.0))
    now, _ = run(gov, 200, 0.0, busy=True)  # 5 s busy: probes after 1, 2 (failing)
    assert gov.current == 1
    now, widths = run(gov, 3000, now, busy=False)  # quiet: the probe due within 4 s wins
    assert gov.current == 2
    first_wide = widths.index(2)
    assert widths[first_wide:] == [2] * (len(widths) - first_wide)
    assert first_wide * QUIET_1 <= 4.0 + QUIET_1


def test_probes_compare_steps_of_the_same_size_only() -> None:
    gov = ThreadGovernor(ThreadPolicy(max_threads=2, probe_seconds=0.0))
    now, _ = run(gov, 5, 0.0, busy=True, n_tokens=8)
    assert gov.current == 1
    assert gov.threads(1, now + 1) == 1  # no one-thread step of 1 token seen yet: nothing to compare a probe with
    assert gov.threads(8, now + 1) == 2


def test_a_contention_that_returns_right_after_a_probe_won_waits_longer_for_the_next_probe() -> None:
    gov = ThreadGovernor(ThreadPolicy(max_threads=2, probe_seconds=1.0))
    now, _ = run(gov, 10, 0.0, busy=True)
    waits = []
    for _ in range(5):  # each probe happens to land in a quiet moment, then the contention is back
        now, _ = run(gov, 1000, now, busy=False)  # the probe wins, and the CPU stays free for a few seconds
        assert gov.current == 2
        now, _ = run(gov, 2, now, busy=True)
        assert gov.current == 1
        dropped = now
        while gov.threads(1, now) == 1:  # busy one-thread steps until the next probe is due
            now, _ = run(gov, 1, now, busy=True)
        waits.append(round(now - dropped))
    assert waits == [4, 8, 16, 16, 16]  # the first probe (after 1 s) failed, so 2 s, doubled at every return


def test_static_policy_and_one_core_never_switch() -> None:
    for policy in (ThreadPolicy(max_threads=2, adaptive=False), ThreadPolicy(max_threads=1)):
        gov = ThreadGovernor(policy)
        _, widths = run(gov, 500, 0.0, busy=True)
        assert set(widths) == {policy.max_threads}
        assert gov.switches == 0
