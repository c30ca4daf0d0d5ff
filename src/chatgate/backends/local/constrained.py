"""Grammar-constrained sampling at nearly the cost of free sampling, ending validly.

Computing the grammar's mask over a 49k vocabulary costs more than the rest of the step. Like
llama.cpp's own common sampler, chatgate first samples without the grammar and asks the matcher
about that one token; only when it is refused is the mask computed, applied to the logits, and the
token drawn again. The result is the same distribution as grammar-then-sample.

The matcher never raises: a grammar error, a step past llguidance's budget, or a state that allows
no token at all ends the choice (``ending``), and no token the grammar refused is ever returned.

As ``max_tokens`` nears, the sampler keeps an ending at hand (see :mod:`closing`): a token is
taken only if the answer can still be closed in the tokens left after it; otherwise the ending is
forced, so the JSON parses (and validates) although ``finish_reason`` is ``length``.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any, Literal

import llama_cpp
import llguidance
import numpy as np

from chatgate.backends.local.closing import Closer

TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)
Ending = Literal["stop", "length"]
log = logging.getLogger("chatgate.grammar")


class ConstrainedSampler:
    """Samples with ``chain`` under ``matcher``; owns neither's lifetime (the sequence does)."""

    def __init__(
        self, chain: Any, matcher: llguidance.LLMatcher, closer: Closer, n_vocab: int, *, estimate: int, margin: int
    ) -> None:
        self.chain = chain
        self.matcher = matcher
        self.closer = closer
        self.margin = margin
        self.estimate = estimate
        """Tokens the current ending needs (as last computed)."""
        self.ending: Ending | None = None
        """Set when the choice must end: after the token just returned, or now if ``sample`` gave None."""
        self.rejections = 0
        self._plan: list[int] | None = None
        """An ending from the current state (when near the end)."""
        self._next: list[int] | None = None
        self._fresh = False
        self._forcing = False
        self._watching = False
        self._beyond: list[int] | None = None
        self._since_check = 0
        self._eos = frozenset(closer.tokenizer.eos_tokens)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._candidates = np.zeros(n_vocab, dtype=TOKEN_DATA)
        self._mask = np.zeros((n_vocab + 31) // 32, dtype=np.uint32)

    def sample(self, ctx: Any, index: int, remaining: int) -> int | None:
        """The next token (``remaining`` may still be produced, this one included), or ``None``."""
        if self._forcing:
            return self._force()
        near = self._near_end(remaining)
        token = self._draw(ctx, index)
        if token is None:
            return None
        if near and not self._keeps_room(token, remaining - 1):
            self._forcing = True
            return self._force()
        if near and self._next is not None:
            self._plan, self._next, self._fresh = self._next, None, True
        return self._accept(token)

    # --- the ending ------------------------------------------------------------------------

    def _near_end(self, remaining: int) -> bool:
        """Whether to check each token against the tokens left; refreshes ``estimate`` (rarely)."""
        slack = remaining - (self.estimate + self.margin)
        self._since_check += 1
        if not self._watching and slack > 0 and self._since_check < slack // 2:
            return False
        self._since_check = 0
        plan = self._plan if self._fresh else self.closer.ending(self.matcher, remaining)
        self._plan, self._fresh = plan, False
        # no ending fits: the shortest one at all, which a sampled token must shorten (see _keeps_room)
        self._beyond = self.closer.ending(self.matcher) if plan is None else None
        self.estimate = len(plan) if plan is not None else self.closer.max_tokens
        self._watching = remaining <= self.estimate + self.margin  # once near the end, check every token
        return self._watching

    def _keeps_room(self, token: int, left: int) -> bool:
        """Whether the answer can still be closed in ``left`` tokens after ``token``."""
        if token in self._eos:
            return True
        if not self.matcher.consume_token(token):
            return False
        after = self.closer.ending(self.matcher, left)
        beyond = self.closer.ending(self.matcher) if after is None and self._beyond is not None else None
        self.matcher.rollback(1)
        self._next = after
        if after is not None and len(after) <= left:
            return True
        if self._plan is not None:
            return False  # the answer could be closed, and this token would spoil that: force the ending
        # none fits yet (the model's longer tokens may still get there): take a token that shortens
        # the way out, else force the shortest ending (one token shorter each step)
        return self._beyond is None or (beyond is not None and len(beyond) < len(self._beyond))

    def _force(self) -> int | None:
        if not self._plan:
            self._plan = self.closer.ending(self.matcher)
        if not self._plan:
            self.ending = "length"
            return None
        token = self._plan.pop(0)
        return self._accept(token)

    # --- drawing ---------------------------------------------------------------------------

    def _draw(self, ctx: Any, index: int) -> int | None:
        pointer = llama_cpp.llama_get_logits_ith(ctx, index)
        logits = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=self._ids.shape)
        token = self._select(logits, None)
        if self._allowed(token):
            return token
        self.rejections += 1
        self.matcher.unsafe_compute_mask_ptr(self._mask.ctypes.data, self._mask.nbytes)
        if self.matcher.is_error() or not self._mask.any():
            return self._dead_end()
        allowed = np.unpackbits(self._mask.view(np.uint8), bitorder="little")[: len(self._ids)].astype(bool)
        token = self._select(logits, allowed)
        if not self._allowed(token):  # a logit bias of -100 on every allowed token
            return self._dead_end()
        return token

    def _allowed(self, token: int) -> bool:
        if token in self._eos:
            return self.matcher.is_accepting()
        return self.matcher.validate_tokens([token]) == 1

    def _dead_end(self) -> int | None:
        """No token may follow (a grammar error, a step past its budget, an empty mask): end here."""
        if self.matcher.is_error():
            log.warning("grammar stopped the answer: %s", self.matcher.get_error()[:200])
        self.ending = "stop"
        return None

    def _accept(self, token: int) -> int | None:
        if not self.matcher.consume_token(token):
            return self._dead_end()
        llama_cpp.llama_sampler_accept(self.chain, token)
        if self._forcing and not self._plan and self.matcher.is_accepting():
            self.ending = "length"
        elif self.matcher.is_stopped():
            self.ending = "stop"
        return token

    def _select(self, logits: Any, allowed: Any) -> int:
        candidates = self._candidates
        candidates["id"] = self._ids
        candidates["logit"] = logits
        candidates["p"] = 0.0
        if allowed is not None:
            candidates["logit"][~allowed] = -np.inf
        array = llama_cpp.llama_token_data_array(
            data=candidates.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=len(candidates),
            selected=-1,
            sorted=False,
        )
        llama_cpp.llama_sampler_apply(self.chain, ctypes.byref(array))
        token: int = array.data[array.selected].id
        return token
