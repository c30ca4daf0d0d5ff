"""Admission, prefix reuse and preemption.

Two layouts of llama.cpp's KV cache are supported:

* **per-sequence streams** (default, ``shared_pool=False``): every slot owns ``n_ctx`` cells of its
  own, so a sequence's cells are laid out exactly as if it ran alone and greedy output does not
  depend on what it is batched with. A slot reuses its own cached prefix in place, or copies a busy
  slot's stream when that saves enough prefill (llama.cpp copies streams whole); ``n > 1`` choices
  copy the prompt's stream after one prefill. When every slot is busy, requests wait.
* **one shared pool** (``shared_pool=True``, llama.cpp's ``kv_unified``): all slots draw from one
  pool of ``n_ctx`` cells, prefixes are shared across slots by copying cell references (a system
  prompt common to many users is held once), ``n > 1`` choices share one prefill, and memory stays
  small. llama.cpp's attention then sums over cells interleaved with other sequences', so outputs can
  differ in the last bits from a lone run.

Cell accounting (shared pool) is conservative: a slot counts every token it holds, so cells shared between slots
(a copied prefix, the prompt of ``n > 1`` choices) count once per slot. The real use is never above
the count, so a decode never runs out of cells the count promised. When the cache is full, idle
slots' prefix caches go first (least recently used first); then the newest running sequence is
preempted: its cells are dropped and it waits, first in line, to be recomputed with what it had
generated, keeping its sampler and text state, so its client sees nothing but a pause.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

import llama_cpp

from chatgate.backends.local.jobs import Job
from chatgate.backends.local.sequence import Phase, Sequence, Slot

HEADROOM_PER_RUNNING = 16
"""Cells kept free per running sequence when admitting another, so admission does not thrash."""
STREAM_COPY_MIN = 64
"""Per-sequence streams: the fewest extra cached tokens that justify copying a busy slot's stream."""


def common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if n >= limit or x != y:
            break
        n += 1
    return n


class Scheduler:
    """Owns the slots, the waiting line and the running set; issues llama.cpp memory operations."""

    def __init__(self, memory: Any, *, n_parallel: int, n_ctx: int, prefix_cache: bool, shared_pool: bool) -> None:
        self._mem = memory
        self.n_ctx = n_ctx
        self.prefix_cache = prefix_cache
        self.shared_pool = shared_pool
        self.slots = [Slot(seq_id=i) for i in range(n_parallel)]
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._order = itertools.count()
        self._clock = itertools.count(1)
        self.preemptions = 0
        self.reused_tokens = 0

    # --- queue -----------------------------------------------------------------------------

    def enqueue(self, seq: Sequence) -> None:
        seq.order = next(self._order)
        self.waiting.append(seq)

    @property
    def used(self) -> int:
        return sum(len(s.tokens) for s in self.slots)

    @property
    def room(self) -> int:
        """Cells still free in the shared pool (per-sequence streams: in the fullest slot)."""
        if not self.shared_pool:
            return self.n_ctx - max((len(s.tokens) for s in self.slots if s.running), default=0)
        return self.n_ctx - self.used

    def idle(self) -> bool:
        return not self.running and not self.waiting

    # --- admission -------------------------------------------------------------------------

    def admit(self) -> list[Sequence]:
        """Move waiting sequences into free slots, first come first served."""
        admitted = []
        while self.waiting:
            seq = self.waiting[0]
            free = [s for s in self.slots if s.running is None]
            if not free or not self._place(seq, free):
                break
            self.waiting.popleft()
            self.running.append(seq)
            admitted.append(seq)
        return admitted

    def _place(self, seq: Sequence, free: list[Slot]) -> bool:
        leader = self._leader_for(seq)
        if leader is not None:
            dst = min(free, key=lambda s: (len(s.tokens), s.last_used))
            if not self._make_room(len(seq.prompt) - len(dst.tokens), keep={dst}):
                return False
            self._reset(dst)
            self._bind(seq, dst, Phase.FORK)
            seq.leader = leader
            leader.followers.append(seq)
            return True
        src, reuse = self._best_prefix(seq.prompt)
        dst = src if src is not None and src.running is None else min(free, key=lambda s: (len(s.tokens), s.last_used))
        keep = {dst} | ({src} if src is not None else set())
        if not self._make_room(len(seq.prompt) - len(dst.tokens), keep=keep):
            return False
        reuse = self._reuse(src, dst, seq.prompt, reuse)
        self.reused_tokens += reuse
        self._bind(seq, dst, Phase.PREFILL)
        if not seq.admitted_once and seq.choice == 0:
            seq.job.cached_tokens = reuse
        seq.admitted_once = True
        return True

    def _leader_for(self, seq: Sequence) -> Sequence | None:
        """A sibling choice still prefilling the same prompt: copy its cells instead of prefilling."""
        if seq.prompt is not seq.job.prompt:
            return None
        for other in self.running:
            if other.job is seq.job and other.phase is Phase.PREFILL and other.leader is None:
                return other
        return None

    def _best_prefix(self, prompt: list[int]) -> tuple[Slot | None, int]:
        """The slot sharing the longest prefix with ``prompt`` (an idle one wins a tie).

        With per-sequence streams, copying another slot's cells copies its whole stream, so it is
        chosen over an idle slot's own prefix only when it saves at least ``STREAM_COPY_MIN`` tokens.
        """
        if not self.prefix_cache:
            return None, 0
        best: Slot | None = None
        best_len = 0
        for slot in self.slots:
            n = common_prefix(slot.tokens, prompt, len(prompt) - 1)
            if n > best_len or (n == best_len and n > 0 and best is not None and best.running and not slot.running):
                best, best_len = slot, n
        if self.shared_pool or best is None or best.running is None:
            return best, best_len
        idle = [(common_prefix(s.tokens, prompt, len(prompt) - 1), s) for s in self.slots if s.running is None]
        own_len, own = max(idle, key=lambda pair: pair[0], default=(0, None))
        if best_len - own_len >= STREAM_COPY_MIN:
            return best, best_len
        return (own, own_len) if own_len else (None, 0)

    def _reuse(self, src: Slot | None, dst: Slot, prompt: list[int], reuse: int) -> int:
        """Make ``dst`` hold ``prompt[:reuse]``, reusing cells in place or copying them from ``src``."""
        if src is dst and reuse > 0 and llama_cpp.llama_memory_seq_rm(self._mem, dst.seq_id, reuse, -1):
            dst.tokens = dst.tokens[:reuse]
            return reuse
        self._reset(dst)
        if src is not None and src is not dst and reuse > 0:
            if self.shared_pool:  # share the cells themselves
                llama_cpp.llama_memory_seq_cp(self._mem, src.seq_id, dst.seq_id, 0, reuse)
            else:  # llama.cpp copies whole streams only: copy, then cut after the prefix
                llama_cpp.llama_memory_seq_cp(self._mem, src.seq_id, dst.seq_id, -1, -1)
                llama_cpp.llama_memory_seq_rm(self._mem, dst.seq_id, reuse, -1)
            dst.tokens = prompt[:reuse]
            return reuse
        return 0

    def _bind(self, seq: Sequence, slot: Slot, phase: Phase) -> None:
        slot.running = seq
        slot.last_used = next(self._clock)
        seq.slot = slot
        seq.phase = phase

    def _reset(self, slot: Slot) -> None:
        if slot.tokens:
            llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
            slot.tokens = []

    def _make_room(self, cells: int, *, keep: set[Slot], headroom: bool = True) -> bool:
        """Evict idle prefix caches until ``cells`` more fit (beside the running sequences' headroom)."""
        if not self.shared_pool:
            return True  # every slot owns its n_ctx cells
        need = cells + (HEADROOM_PER_RUNNING * len(self.running) if headroom else 0)
        victims = sorted(
            (s for s in self.slots if s.running is None and s not in keep and s.tokens), key=lambda s: s.last_used
        )
        for victim in victims:
            if self.room >= need:
                break
            self._reset(victim)
        return self.room >= need or (not self.running and self.room >= cells)

    # --- growth and preemption ---------------------------------------------------------------

    def ensure_room(self, cells: int) -> None:
        """Free ``cells`` cells for this step: evict idle caches, then preempt the newest sequences."""
        if not self.shared_pool:
            return
        self._make_room(cells, keep=set(), headroom=False)
        while self.room < cells and len(self.running) > 1:
            newest = max(self.running, key=lambda s: s.order)
            cells -= 1 if newest.phase is Phase.DECODE else 0
            self.preempt(newest)

    def preempt(self, seq: Sequence) -> None:
        """Drop ``seq``'s cells and put it first in line, to be recomputed with what it generated."""
        self.preemptions += 1
        for follower in list(seq.followers):
            self.preempt(follower)
        if seq.leader is not None:
            seq.leader.followers.remove(seq)
            seq.leader = None
        slot = seq.slot
        if slot is not None:
            self._reset(slot)
            slot.running = None
        seq.slot = None
        if seq.generated:
            seq.prompt = seq.job.prompt + seq.generated
        seq.pending = None
        seq.phase = Phase.WAITING
        self.running.remove(seq)
        self.waiting.appendleft(seq)

    def release(self, seq: Sequence) -> None:
        """``seq`` is done: its slot goes idle and keeps its cells as a prefix cache."""
        if seq.slot is not None:
            seq.slot.running = None
            seq.slot.last_used = next(self._clock)
            if not self.prefix_cache:
                self._reset(seq.slot)
        seq.slot = None
        for follower in seq.followers:
            follower.leader = None
        seq.followers.clear()
        if seq in self.running:
            self.running.remove(seq)

    def drop_waiting(self, job: Job) -> list[Sequence]:
        dropped = [s for s in self.waiting if s.job is job]
        self.waiting = deque(s for s in self.waiting if s.job is not job)
        return dropped

    def clear(self) -> None:
        """Forget everything (after an engine fault): the caller has failed the jobs."""
        llama_cpp.llama_memory_clear(self._mem, True)
        for slot in self.slots:
            slot.tokens = []
            slot.running = None
        self.running.clear()
        self.waiting.clear()
