"""What the async side hands the engine thread, and what the engine sends back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from chatgate.backends.local.sampling import SamplingParams
from chatgate.errors import ChatgateError
from chatgate.protocol import TokenLogprob


@dataclass
class ChoiceDelta:
    """New text (and the logprobs of the tokens behind it) for one choice."""

    index: int
    text: str
    logprobs: list[TokenLogprob]


@dataclass
class ChoiceDone:
    """A choice ended; ``completion_tokens`` counts every token it sampled."""

    index: int
    finish_reason: Literal["stop", "length"]
    completion_tokens: int


@dataclass
class JobDone:
    """The whole job ended; no more events follow."""

    prompt_tokens: int
    cached_tokens: int
    cancelled: bool = False


@dataclass
class JobFailed:
    """The job could not be served; no more events follow."""

    error: ChatgateError


EngineEvent = ChoiceDelta | ChoiceDone | JobDone | JobFailed


@dataclass(eq=False)
class Job:
    """One request for the engine: a tokenised prompt and one sampling setup per choice.

    The fields after ``cancelled`` belong to the engine thread.
    """

    prompt: list[int]
    choices: list[SamplingParams]
    max_tokens: int
    stops: list[str]
    top_logprobs: int | None
    """``None``: no logprobs; otherwise how many alternatives to report per token (0-20)."""
    sink: Callable[[EngineEvent], None]
    grammars: list[Any] | None = None
    """One llguidance matcher per choice, or ``None``."""
    grammar_estimate: int = 0
    """Tokens in the shortest document the grammar accepts (where the ending search starts from)."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.monotonic)
    open_choices: int = -1
    cached_tokens: int = 0
    finished: bool = False

    def cancel(self) -> None:
        self.cancelled.set()
