"""The local inference engine: one thread that owns a llama.cpp context and serves jobs in turn.

Jobs are served first come, first served; the event loop never waits on llama.cpp. The KV cache
keeps the tokens of the last job, and a new job whose prompt shares a prefix with them reuses those
cells, so only new tokens are prefilled (the growing conversation of a multi-turn chat).

The last prompt token is always decoded on its own, so the logits a job samples from do not depend
on how much of its prompt was cached: the same request with the same seed gives the same tokens.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Literal

import llama_cpp
import numpy as np

from chatgate.backends.local.jobs import ChoiceDelta, ChoiceDone, Job, JobDone, JobFailed
from chatgate.backends.local.llama import GGUFModel
from chatgate.backends.local.logprobs import token_logprob
from chatgate.backends.local.sampling import SamplingParams, build_chain
from chatgate.backends.local.textstream import TextStream
from chatgate.errors import InternalError, OverloadedError
from chatgate.protocol import TokenLogprob

log = logging.getLogger("chatgate.engine")


class _Cancelled(Exception):
    pass


class EngineClosedError(Exception):
    pass


@dataclass
class EngineStats:
    """Counters the engine thread updates and anyone may read."""

    running: int = 0
    jobs_done: int = 0
    tokens_generated: int = 0
    prompt_tokens_processed: int = 0
    prompt_tokens_reused: int = 0


class Engine:
    """Owns a llama.cpp context; :meth:`submit` queues a :class:`Job`, events go to its sink."""

    def __init__(self, model: GGUFModel, *, n_ctx: int, n_threads: int, n_batch: int = 512, max_waiting: int = 256):
        self.model = model
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = 1
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.no_perf = True
        self._ctx: Any = llama_cpp.llama_init_from_model(model.ptr, params)
        if not self._ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {n_ctx} tokens")
        self._mem: Any = llama_cpp.llama_get_memory(self._ctx)
        self._batch: Any = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._cache: list[int] = []
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._max_waiting = max_waiting
        self._closed = False
        self.stats = EngineStats()
        self._thread = threading.Thread(target=self._run, name="chatgate-engine", daemon=True)
        self._thread.start()

    # --- the async side ----------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        if self._closed:
            raise EngineClosedError("the engine is shut down")
        if self._jobs.qsize() >= self._max_waiting:
            raise OverloadedError("The local engine has too many requests waiting; retry shortly.")
        self._jobs.put(job)

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    def close(self) -> None:
        """Finish the job in hand, fail the waiting ones, stop the thread and free llama.cpp state."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)

    # --- the engine thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            self.stats.running = 1
            try:
                self._serve(job)
            except _Cancelled:
                job.sink(JobDone(prompt_tokens=len(job.prompt), cached_tokens=0, cancelled=True))
            except Exception:
                log.exception("engine failure while serving a job")
                self._cache = []
                llama_cpp.llama_memory_clear(self._mem, True)
                job.sink(JobFailed(InternalError("The local engine failed while generating.")))
            finally:
                self.stats.running = 0
                self.stats.jobs_done += 1
        while not self._jobs.empty():
            pending = self._jobs.get_nowait()
            if pending is not None:
                pending.sink(JobFailed(OverloadedError("The server is shutting down.")))

    def _serve(self, job: Job) -> None:
        if job.cancelled.is_set():
            raise _Cancelled
        cached = self._prefill(job)
        for index, params in enumerate(job.choices):
            if index > 0:
                self._rewind_to_prompt(job.prompt)
            self._generate(job, index, params)
        job.sink(JobDone(prompt_tokens=len(job.prompt), cached_tokens=cached))

    def _prefill(self, job: Job) -> int:
        """Bring the KV cache to ``prompt``; returns how many prompt tokens were reused."""
        prompt = job.prompt
        reuse = 0
        for a, b in zip(self._cache, prompt[:-1], strict=False):
            if a != b:
                break
            reuse += 1
        if not llama_cpp.llama_memory_seq_rm(self._mem, 0, reuse, -1):
            llama_cpp.llama_memory_clear(self._mem, True)
            reuse = 0
        self._cache = prompt[:reuse]
        self.stats.prompt_tokens_reused += reuse
        self.stats.prompt_tokens_processed += len(prompt) - reuse
        body = prompt[reuse:-1]
        for start in range(0, len(body), self.n_batch):
            if job.cancelled.is_set():
                raise _Cancelled
            self._decode(body[start : start + self.n_batch], want_logits=False)
        self._decode(prompt[-1:], want_logits=True)
        return reuse

    def _rewind_to_prompt(self, prompt: list[int]) -> None:
        """Drop what the previous choice generated and re-decode the last prompt token."""
        llama_cpp.llama_memory_seq_rm(self._mem, 0, len(prompt) - 1, -1)
        self._cache = prompt[:-1]
        self._decode(prompt[-1:], want_logits=True)

    def _decode(self, tokens: list[int], *, want_logits: bool) -> None:
        batch = self._batch
        start = len(self._cache)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = start + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 0
        if want_logits:
            batch.logits[len(tokens) - 1] = 1
        batch.n_tokens = len(tokens)
        status = llama_cpp.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        self._cache.extend(tokens)

    def _generate(self, job: Job, index: int, params: SamplingParams) -> None:
        chain = build_chain(params, self.model.n_vocab, penalty_window=job.max_tokens)
        try:
            finish, produced = self._sample_loop(job, index, chain)
        finally:
            llama_cpp.llama_sampler_free(chain)
        job.sink(ChoiceDone(index=index, finish_reason=finish, completion_tokens=produced))

    def _sample_loop(self, job: Job, index: int, chain: Any) -> tuple[Literal["stop", "length"], int]:
        model = self.model
        text: TextStream[TokenLogprob | None] = TextStream(job.stops)
        produced = 0
        finish: Literal["stop", "length"]
        while True:
            if job.cancelled.is_set():
                raise _Cancelled
            token = llama_cpp.llama_sampler_sample(chain, self._ctx, -1)
            if model.is_eog(token):
                finish = "stop"
                break
            produced += 1
            self.stats.tokens_generated += 1
            piece = model.piece(token)
            entry = self._logprob(token, piece, job.top_logprobs) if job.top_logprobs is not None else None
            released = text.push(piece, entry)
            self._emit(job, index, released.text, released.entries)
            if released.stopped:
                return "stop", produced
            if produced >= job.max_tokens or len(self._cache) >= self.n_ctx:
                finish = "length"
                break
            self._decode([token], want_logits=True)
        rest = text.finish()
        self._emit(job, index, rest.text, rest.entries)
        return finish, produced

    @staticmethod
    def _emit(job: Job, index: int, text: str, entries: list[TokenLogprob | None]) -> None:
        logprobs = [e for e in entries if e is not None]
        if text or logprobs:
            job.sink(ChoiceDelta(index=index, text=text, logprobs=logprobs))

    def _logprob(self, token: int, piece: bytes, top: int) -> TokenLogprob:
        pointer = llama_cpp.llama_get_logits_ith(self._ctx, -1)
        logits = np.ctypeslib.as_array(
            ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self.model.n_vocab,)
        )
        return token_logprob(self.model, logits, token, piece, top)
