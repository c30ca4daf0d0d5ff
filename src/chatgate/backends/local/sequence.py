"""The engine's bookkeeping: slots (llama.cpp sequence ids and the tokens their KV cells hold)
and sequences (one choice of one job, from admission to its last token)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from chatgate.backends.local.constrained import ConstrainedSampler
from chatgate.backends.local.jobs import Job
from chatgate.backends.local.sampling import SamplingParams
from chatgate.backends.local.textstream import TextStream
from chatgate.protocol import TokenLogprob


class Phase(enum.Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    """Decoding ``prompt[slot.tokens:]`` in chunks; sampling starts after the last prompt token."""
    FORK = "fork"
    """Will copy its leader's prompt cells and sample from the leader's logits (``n > 1``)."""
    DECODE = "decode"
    """Has a sampled token (``pending``) to decode, then samples the next one."""


@dataclass(eq=False)
class Slot:
    """A llama.cpp sequence id and the tokens whose KV cells it holds (positions 0..len-1).

    An idle slot keeps its cells as a prefix cache until they are needed."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    running: Sequence | None = None
    last_used: int = 0


@dataclass(eq=False)
class Sequence:
    """One choice of a job. ``prompt`` is what must be in the KV cache before the next sample:
    the job's prompt, plus what it generated if it was preempted and is being recomputed."""

    job: Job
    choice: int
    params: SamplingParams
    prompt: list[int]
    text: TextStream[TokenLogprob | None]
    order: int = 0
    phase: Phase = Phase.WAITING
    chain: Any = None
    constrained: ConstrainedSampler | None = None
    """Samples under the choice's grammar (an llguidance matcher), or ``None``."""
    slot: Slot | None = None
    pending: int | None = None
    generated: list[int] = field(default_factory=list)
    """Every token sampled so far, the pending one included."""
    produced: int = 0
    leader: Sequence | None = None
    followers: list[Sequence] = field(default_factory=list)
    logits_index: int = -1
    first_token_at: float | None = None
    last_token_at: float | None = None
    admitted_once: bool = False

    def free_samplers(self) -> None:
        """Free the llama.cpp samplers this sequence owns."""
        if self.chain is not None:
            llama_cpp.llama_sampler_free(self.chain)
        self.chain = self.constrained = None

    def kv_needed(self) -> int:
        """Cells this sequence still has to add before it can sample."""
        held = len(self.slot.tokens) if self.slot else 0
        return max(len(self.prompt) - held, 1)
