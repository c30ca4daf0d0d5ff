"""The thread governor's choices, driven by a simulated 2-core machine whose step timings are those
measured on one (8 ms quiet at two threads, 16 ms at one; with a busy process per core, 200 ms at two
threads with the engine thread on a CPU 30% of the time, 25 ms at one), and the real /proc/stat reader."""

from __future__ import annotations

import os
from dataclasses import dataclass

from chatgate.backends.local.threads import IdleMeter, ThreadGovernor, ThreadPolicy

QUIET_2, QUIET_1, BUSY_2, BUSY_1 = 0.008, 0.016, 0.2, 0.025


@dataclass
class Machine:
    """Two cores, busy (one spinning process per core) or not; what the governor would measure."""

    busy: bool = False
    width: int = 2

    def idle_cores(self) -> float:
        return 0.0 if self.busy else 2.0 - self.width

    def step(self, threads: int) -> tuple[float, float]:
        self.width = threads
        if threads == 1:
            seconds = BUSY_1 if self.busy else QUIET_1
            return seconds, seconds * (0.67 if self.busy else 1.0)
        seconds = BUSY_2 if self.busy else QUIET_2
        return seconds, seconds * (0.3 if self.busy else 0.98)


def governor(machine: Machine) -> ThreadGovernor:
    return ThreadGovernor(ThreadPolicy(max_threads=2), idle=machine.idle_cores)


def run(
    gov: ThreadGovernor, machine: Machine, seconds: float, now: float, n_tokens: int = 1
) -> tuple[float, list[int]]:
    """Drive decode steps through the governor for ``seconds``; return the clock and each step's width."""
    widths, end = [], now + seconds
    while now < end:
        threads = gov.threads(n_tokens, now)
        took, cpu = machine.step(threads)
        now += took
        gov.observe(threads, n_tokens, took, cpu, now)
        widths.append(threads)
    return now, widths


def test_a_quiet_cpu_keeps_every_thread() -> None:
    machine = Machine()
    gov = governor(machine)
    _, widths = run(gov, machine, 60.0, 0.0)
    assert set(widths) == {2}
    assert gov.switches == 0


def test_a_quiet_cpu_with_brief_preemptions_keeps_every_thread_and_probes_at_most_once_a_second() -> None:
    machine = Machine()
    gov = governor(machine)
    now, widths = 0.0, []
    for i in range(6000):  # every 3rd step the engine thread loses its CPU for a while: the step takes twice as long
        threads = gov.threads(1, now)
        took, cpu = machine.step(threads)
        preempted = i % 3 == 0 or i % 50 == 1  # now and then twice in a row
        took *= 2.0 if preempted else 1.0
        now += took
        gov.observe(threads, 1, took, cpu * (0.33 if preempted else 1.0), now)
        widths.append(threads)
    assert gov.current == 2 and gov.switches == 0
    assert 0 < widths.count(1) <= now + 1  # one-thread probes that lost, one a second at most
    assert widths.count(1) < len(widths) / 100


def test_a_shared_cpu_drops_to_one_thread_after_two_slow_steps_and_one_probe() -> None:
    machine = Machine()
    gov = governor(machine)
    now, _ = run(gov, machine, 2.0, 0.0)
    machine.busy = True
    _, widths = run(gov, machine, 5.0, now)
    assert widths[:4] == [2, 2, 1, 1]
    assert gov.current == 1


def test_while_the_cpu_stays_shared_no_probe_back_is_spent() -> None:
    machine = Machine(busy=True)
    gov = governor(machine)
    _, widths = run(gov, machine, 100.0, 0.0)
    assert widths.count(2) <= 3  # the first steps, before it knew
    assert widths[-3000:] == [1] * 3000


def test_when_the_cpu_is_free_again_the_next_probe_restores_every_thread() -> None:
    machine = Machine(busy=True)
    gov = governor(machine)
    now, _ = run(gov, machine, 5.0, 0.0)
    machine.busy = False
    _, widths = run(gov, machine, 10.0, now)
    first_wide = widths.index(2)
    assert widths[first_wide:] == [2] * (len(widths) - first_wide)
    assert first_wide * QUIET_1 <= 2.0 + QUIET_1


def test_without_an_idle_reading_failed_probes_back_off_to_one_every_16_seconds() -> None:
    machine = Machine(busy=True)
    gov = ThreadGovernor(ThreadPolicy(max_threads=2), idle=lambda: None)
    _, widths = run(gov, machine, 120.0, 0.0)
    wide = [i for i, w in enumerate(widths) if w == 2]
    assert 5 <= len(wide) <= 3 + 120 / 16 + 4  # after 1, 2, 4, 8 s, then every 16 s
    assert sum(1 for i in wide if i >= len(widths) - 60 / BUSY_1) <= 5  # the last minute


def test_probes_compare_steps_of_the_same_size_only() -> None:
    machine = Machine(busy=True)
    gov = governor(machine)
    now, _ = run(gov, machine, 3.0, 0.0, n_tokens=8)
    assert gov.current == 1
    machine.busy = False
    assert gov.threads(1, now + 2) == 1  # no one-thread step of 1 token yet: nothing to compare a probe with
    assert gov.threads(8, now + 2) == 2


def test_static_policy_and_one_core_never_switch() -> None:
    for policy in (ThreadPolicy(max_threads=2, adaptive=False), ThreadPolicy(max_threads=1)):
        machine = Machine(busy=True)
        gov = ThreadGovernor(policy, idle=machine.idle_cores)
        _, widths = run(gov, machine, 20.0, 0.0)
        assert set(widths) == {policy.max_threads}
        assert gov.switches == 0


def test_the_idle_meter_reads_this_machines_idle_cores() -> None:
    meter = IdleMeter()
    sum(i * i for i in range(300_000))  # some time passes
    idle = meter.idle_cores()
    assert idle is not None and 0.0 <= idle <= 2.0 * (os.cpu_count() or 1)
    assert IdleMeter("/nonexistent/stat").idle_cores() is None
