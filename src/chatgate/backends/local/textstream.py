"""Incremental, UTF-8-safe detokenisation with stop sequences.

Token pieces arrive as bytes; a character split across tokens is held until it is whole, and a
character still incomplete when generation ends (``max_tokens`` cut inside it) is dropped, never sent
as U+FFFD; its token's logprob entry is still released, with the raw bytes it holds. Text that
could be the beginning of a stop sequence is held back until it is known not to be, so a stop
sequence never reaches the client, also when it straddles tokens. Each token's logprob entry is
released together with the text it produced, so streamed logprobs match streamed content.
"""

from __future__ import annotations

import codecs
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Released(Generic[T]):
    """What one step lets out: text for the client and the entries of the tokens behind it."""

    text: str = ""
    entries: list[T] = field(default_factory=list)
    stopped: bool = False


class TextStream(Generic[T]):
    """Assemble token pieces into text, holding back possible stop sequences."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._released = 0
        self._pending: deque[tuple[int, T]] = deque()
        self.stopped = False

    @property
    def text(self) -> str:
        """All text released so far."""
        return self._text[: self._released]

    def push(self, piece: bytes, entry: T) -> Released[T]:
        """Add one token's bytes; return what can be released now."""
        self._text += self._decoder.decode(piece)
        self._pending.append((len(self._text), entry))
        hit = self._find_stop()
        if hit is not None:
            self.stopped = True
            return self._release_to(hit, stopped=True)
        return self._release_to(len(self._text) - self._held_suffix())

    def finish(self) -> Released[T]:
        """The generation ended without a stop sequence: release everything left but the bytes of
        an incomplete last character, which are dropped (the decoder only ever holds a proper prefix
        of a UTF-8 sequence; malformed bytes inside the text were already replaced as they came)."""
        self._decoder.reset()
        return self._release_to(len(self._text))

    def _find_stop(self) -> int | None:
        window = self._text[self._released :]
        hits = [i for i in (window.find(s) for s in self._stops) if i >= 0]
        return self._released + min(hits) if hits else None

    def _held_suffix(self) -> int:
        """Length of the longest tail of unreleased text that begins some stop sequence."""
        tail = self._text[self._released :]
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(tail)), best, -1):
                if tail.endswith(stop[:k]):
                    best = k
                    break
        return best

    def _release_to(self, end: int, *, stopped: bool = False) -> Released[T]:
        out = Released[T](text=self._text[self._released : end], stopped=stopped)
        self._released = max(self._released, end)
        while self._pending and self._pending[0][0] <= self._released:
            out.entries.append(self._pending.popleft()[1])
        if stopped:
            self._text = self._text[:end]
            self._pending.clear()
        return out
