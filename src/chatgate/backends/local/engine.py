"""The local inference engine: continuous batching on llama.cpp's low-level API.

One thread owns the llama.cpp context and runs the scheduler loop: admit waiting sequences, build
one batch holding a decode token for every running sequence plus chunks of pending prompts, decode
once, sample every sequence with its own sampler chain, and hand tokens to the requests' queues.
New requests join between steps; finished or cancelled ones free their slot at once. The event loop
never waits on llama.cpp.

Prompt (prefix) caching: a new sequence reuses the KV cells of the longest prefix it shares with any
slot (the growing conversation of a multi-turn chat; a system prompt shared across users), so only
new tokens are prefilled. ``n > 1`` prefills the prompt once and copies its cells to the siblings,
which sample from the same logits with their own seeds.

Each decode runs on every core while the CPU is free and on one thread while other processes keep
it busy (llama.cpp's threads stall each other then): :mod:`chatgate.backends.local.threads`.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import llama_cpp
import numpy as np

from chatgate.backends.local.closing import Closer
from chatgate.backends.local.constrained import ConstrainedSampler
from chatgate.backends.local.jobs import ChoiceDelta, ChoiceDone, Job, JobDone, JobFailed
from chatgate.backends.local.llama import GGUFModel
from chatgate.backends.local.logprobs import token_logprob
from chatgate.backends.local.metrics import EngineStats
from chatgate.backends.local.sampling import build_chain
from chatgate.backends.local.scheduler import Scheduler
from chatgate.backends.local.sequence import Phase, Sequence
from chatgate.backends.local.textstream import TextStream
from chatgate.backends.local.threads import ThreadGovernor, ThreadPolicy
from chatgate.errors import ChatgateError, InternalError, OverloadedError
from chatgate.protocol import TokenLogprob

log = logging.getLogger("chatgate.engine")


class EngineClosedError(Exception):
    pass


@dataclass(frozen=True)
class EngineConfig:
    n_ctx: int
    threads: ThreadPolicy
    n_parallel: int = 8
    n_batch: int = 512
    n_ubatch: int = 32
    max_waiting: int = 256
    prefix_cache: bool = True
    kv_unified: bool = False
    close_margin: int = 4
    """Tokens of slack when a constrained answer is closed before ``max_tokens`` (see ``constrained``)."""


class Engine:
    """Owns a llama.cpp context; :meth:`submit` queues a :class:`Job`, events go to its sink."""

    def __init__(self, model: GGUFModel, config: EngineConfig, closer: Closer | None = None) -> None:
        self.model = model
        self.closer = closer
        """Finds endings for constrained answers; required to run a job with grammars."""
        self.config = config
        self.n_ctx = config.n_ctx
        params = llama_cpp.llama_context_default_params()
        # n_ctx is one sequence's window; per-sequence streams need that many cells per slot.
        params.n_ctx = config.n_ctx if config.kv_unified else config.n_ctx * config.n_parallel
        params.n_batch = config.n_batch
        params.n_ubatch = min(config.n_ubatch, config.n_batch)
        params.n_seq_max = config.n_parallel
        params.kv_unified = config.kv_unified
        params.n_threads = config.threads.max_threads
        params.n_threads_batch = config.threads.max_threads
        params.no_perf = True
        self._ctx: Any = llama_cpp.llama_init_from_model(model.ptr, params)
        if not self._ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {config.n_ctx} tokens")
        self._batch: Any = llama_cpp.llama_batch_init(config.n_batch, 0, 1)
        self._sched = Scheduler(
            llama_cpp.llama_get_memory(self._ctx),
            n_parallel=config.n_parallel,
            n_ctx=config.n_ctx,
            prefix_cache=config.prefix_cache,
            shared_pool=config.kv_unified,
        )
        self._inbox: queue.Queue[Job | None] = queue.Queue()
        self._closed = False
        self.stats = EngineStats(kv_cells_total=params.n_ctx, threads=config.threads.max_threads)
        self._governor = ThreadGovernor(config.threads)
        self._thread = threading.Thread(target=self._run, name="chatgate-engine", daemon=True)
        self._thread.start()

    # --- the async side ----------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        if self._closed:
            raise EngineClosedError("the engine is shut down")
        if self.waiting >= self.config.max_waiting:
            raise OverloadedError("The local engine has too many requests waiting; retry shortly.")
        self._inbox.put(job)

    @property
    def waiting(self) -> int:
        return self.stats.waiting + self._inbox.qsize()

    def close(self) -> None:
        """Stop the thread (failing what is still in flight) and free llama.cpp state."""
        if self._closed:
            return
        self._closed = True
        self._inbox.put(None)
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)

    # --- the engine thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._tick():
                pass
        finally:
            self._fail_all(OverloadedError("The server is shutting down."))
            while not self._inbox.empty():
                job = self._inbox.get_nowait()
                if job is not None:
                    job.sink(JobFailed(OverloadedError("The server is shutting down.")))

    def _tick(self) -> bool:
        if self._sched.idle() and not self._take(self._inbox.get()):
            return False
        while not self._inbox.empty():
            if not self._take(self._inbox.get_nowait()):
                return False
        self._reap_cancelled()
        try:
            self._sched.admit()
            if self._sched.running:
                self._step()
        except Exception:
            log.exception("engine failure; failing the jobs in flight")
            self._fail_all(InternalError("The local engine failed while generating."))
        self._update_stats()
        return True

    def _take(self, job: Job | None) -> bool:
        if job is None:
            return False
        job.open_choices = len(job.choices)
        for index, params in enumerate(job.choices):
            seq = Sequence(job=job, choice=index, params=params, prompt=job.prompt, text=TextStream(job.stops))
            seq.chain = build_chain(params, self.model.n_vocab, min(job.max_tokens, self.n_ctx))
            if job.grammars and self.closer is not None:
                seq.constrained = ConstrainedSampler(
                    seq.chain,
                    job.grammars[index],
                    self.closer,
                    self.model.n_vocab,
                    estimate=job.grammar_estimate,
                    margin=self.config.close_margin,
                )
            self._sched.enqueue(seq)
        return True

    def _reap_cancelled(self) -> None:
        for seq in [s for s in self._sched.running if s.job.cancelled.is_set()]:
            self._sched.release(seq)
            self._close_sequence(seq)
        cancelled = {s.job for s in self._sched.waiting if s.job.cancelled.is_set()}
        for job in cancelled:
            for seq in self._sched.drop_waiting(job):
                self._close_sequence(seq)

    def _close_sequence(self, seq: Sequence) -> None:
        """A sequence leaves the engine; the job ends with its last one."""
        seq.free_samplers()
        job = seq.job
        job.open_choices -= 1
        if job.open_choices == 0 and not job.finished:
            job.finished = True
            self.stats.jobs_done += 1
            job.sink(JobDone(len(job.prompt), job.cached_tokens, cancelled=job.cancelled.is_set()))

    def _fail_all(self, error: ChatgateError) -> None:
        jobs = {s.job for s in self._sched.running} | {s.job for s in self._sched.waiting}
        for seq in [*self._sched.running, *self._sched.waiting]:
            seq.free_samplers()
        self._sched.clear()
        for job in jobs:
            if not job.finished:
                job.finished = True
                job.sink(JobFailed(error))

    def _update_stats(self) -> None:
        stats = self.stats
        stats.running = len(self._sched.running)
        stats.waiting = len(self._sched.waiting)
        stats.kv_cells_used = self._sched.used
        stats.preemptions = self._sched.preemptions
        stats.prompt_tokens_reused = self._sched.reused_tokens

    # --- one decode step ---------------------------------------------------------------------

    def _step(self) -> None:
        sched = self._sched
        sched.ensure_room(sum(1 for s in sched.running if s.phase is Phase.DECODE))
        plan = self._plan()
        if not plan:
            return
        status = self._decode()
        if status == 1:  # no KV slot after all: make room and try again next step
            newest = max(sched.running, key=lambda s: s.order)
            if len(sched.running) > 1:
                sched.preempt(newest)
            else:  # alone and still no room: its context is as full as it can get
                log.warning("KV cache full for a lone sequence; ending it with finish_reason=length")
                self._finish(newest, "length")
            return
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        self.stats.decode_steps += 1
        ready = self._commit(plan)
        for seq in ready:
            for follower in list(seq.followers):
                self._fork(seq, follower)
                ready.append(follower)
            seq.followers.clear()
        before = self.stats.tokens_generated
        for seq in ready:
            if seq.slot is not None:
                self._sample(seq)
        self.stats.record_step(self.stats.tokens_generated - before)

    def _decode(self) -> int:
        """One ``llama_decode`` at the width the governor picks; its time goes back to the governor."""
        n_tokens = self._batch.n_tokens
        started, cpu = time.monotonic(), time.thread_time()
        threads = self._governor.threads(n_tokens, started)
        if threads != self.stats.threads:
            llama_cpp.llama_set_n_threads(self._ctx, threads, threads)
            self.stats.threads = threads
        status: int = llama_cpp.llama_decode(self._ctx, self._batch)
        if status == 0:
            now = time.monotonic()
            self._governor.observe(threads, n_tokens, now - started, time.thread_time() - cpu, now)
            self.stats.thread_switches = self._governor.switches
            self.stats.thread_probes = self._governor.probes
        return status

    def _plan(self) -> list[tuple[Sequence, int, bool]]:
        """Fill the batch: one token per decoding sequence, then prompt chunks. Returns, per
        sequence in the batch, how many tokens it put in and whether it will sample after."""
        sched, batch = self._sched, self._batch
        plan: list[tuple[Sequence, int, bool]] = []
        n = 0
        for seq in sched.running:
            if seq.phase is Phase.DECODE and seq.pending is not None and seq.slot is not None:
                self._put(n, seq.pending, len(seq.slot.tokens), seq.slot.seq_id, True)
                seq.logits_index = n
                n += 1
                plan.append((seq, 1, True))
        budget = self.config.n_batch - n
        if sched.shared_pool:
            budget = min(budget, sched.room - n)
        for seq in sched.running:
            if seq.phase is not Phase.PREFILL or seq.slot is None or budget <= 0:
                continue
            start = len(seq.slot.tokens)
            take = min(len(seq.prompt) - start, budget)
            last = start + take == len(seq.prompt)
            for i in range(take):
                self._put(n + i, seq.prompt[start + i], start + i, seq.slot.seq_id, last and i == take - 1)
            if last:
                seq.logits_index = n + take - 1
            n += take
            budget -= take
            plan.append((seq, take, last))
        batch.n_tokens = n
        return plan if n else []

    def _put(self, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq_id
        batch.logits[i] = 1 if logits else 0

    def _commit(self, plan: list[tuple[Sequence, int, bool]]) -> list[Sequence]:
        """Record what the decode put in the cache; return the sequences that sample now."""
        ready = []
        for seq, count, samples in plan:
            assert seq.slot is not None
            if seq.phase is Phase.DECODE:
                assert seq.pending is not None
                seq.slot.tokens.append(seq.pending)
                seq.pending = None
            else:
                start = len(seq.slot.tokens)
                seq.slot.tokens.extend(seq.prompt[start : start + count])
                self.stats.prompt_tokens_processed += count
                if samples:
                    seq.phase = Phase.DECODE
            if samples:
                ready.append(seq)
        return ready

    def _fork(self, leader: Sequence, follower: Sequence) -> None:
        """Give ``follower`` the leader's prompt cells and its logits (n > 1 shares one prefill)."""
        assert leader.slot is not None and follower.slot is not None
        mem = llama_cpp.llama_get_memory(self._ctx)
        llama_cpp.llama_memory_seq_rm(mem, follower.slot.seq_id, -1, -1)
        llama_cpp.llama_memory_seq_cp(mem, leader.slot.seq_id, follower.slot.seq_id, -1, -1)
        follower.slot.tokens = list(leader.slot.tokens)
        follower.logits_index = leader.logits_index
        follower.leader = None
        follower.phase = Phase.DECODE

    # --- sampling ----------------------------------------------------------------------------

    def _sample(self, seq: Sequence) -> None:
        assert seq.slot is not None
        if seq.constrained is not None:
            left = min(seq.job.max_tokens - seq.produced, self.n_ctx - len(seq.slot.tokens))
            drawn = seq.constrained.sample(self._ctx, seq.logits_index, left)
            if drawn is None:
                self._finish(seq, seq.constrained.ending or "stop")
                return
            token = drawn
        else:
            token = llama_cpp.llama_sampler_sample(seq.chain, self._ctx, seq.logits_index)
        self._clock(seq)
        job = seq.job
        if self.model.is_eog(token):
            self._finish(seq, "stop")
            return
        seq.produced += 1
        seq.generated.append(token)
        self.stats.tokens_generated += 1
        piece = self.model.piece(token)
        entry = (
            self._logprob(seq.logits_index, token, piece, job.top_logprobs) if job.top_logprobs is not None else None
        )
        released = seq.text.push(piece, entry)
        self._emit(seq, released.text, released.entries)
        if released.stopped:
            self._finish(seq, "stop", flush=False)
        elif seq.produced >= job.max_tokens or len(seq.slot.tokens) + 1 > self.n_ctx:
            self._finish(seq, "length")
        elif seq.constrained is not None and seq.constrained.ending is not None:
            self._finish(seq, seq.constrained.ending)
        else:
            seq.pending = token

    def _clock(self, seq: Sequence) -> None:
        now = time.monotonic()
        if seq.first_token_at is None:
            seq.first_token_at = now
            if seq.choice == 0:
                self.stats.ttft_seconds.observe(now - seq.job.submitted_at)
        elif seq.last_token_at is not None:
            self.stats.time_per_token_seconds.observe(now - seq.last_token_at)
        seq.last_token_at = now

    def _finish(self, seq: Sequence, reason: Literal["stop", "length"], *, flush: bool = True) -> None:
        if flush:
            rest = seq.text.finish()
            self._emit(seq, rest.text, rest.entries)
        seq.job.sink(ChoiceDone(index=seq.choice, finish_reason=reason, completion_tokens=seq.produced))
        self._sched.release(seq)
        self._close_sequence(seq)

    @staticmethod
    def _emit(seq: Sequence, text: str, entries: list[TokenLogprob | None]) -> None:
        logprobs = [e for e in entries if e is not None]
        if text or logprobs:
            seq.job.sink(ChoiceDelta(index=seq.choice, text=text, logprobs=logprobs))

    def _logprob(self, index: int, token: int, piece: bytes, top: int) -> TokenLogprob:
        pointer = llama_cpp.llama_get_logits_ith(self._ctx, index)
        logits = np.ctypeslib.as_array(
            ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self.model.n_vocab,)
        )
        return token_logprob(self.model, logits, token, piece, top)
