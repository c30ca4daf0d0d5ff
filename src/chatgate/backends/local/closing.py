"""The short way out of a grammar: a few tokens that take a matcher to an accepting state.

Used twice. When a grammar is compiled, a search from its start state proves that some document
exists (a schema whose grammar accepts nothing is refused with a 400). While a constrained answer
runs out of ``max_tokens``, the same search from the current state gives the ending that closes
the JSON validly, and the sampler forces it in time.

The search is depth-first over one matcher (``consume``/``rollback``, no copies): forced tokens
are taken at once; otherwise the first few allowed tokens of a fixed preference list (closing
quotes and brackets first, then short values), falling back to any allowed token. It is bounded
by a number of steps and a length, so its cost is bounded too; it finds a short ending, not
always the shortest.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import llguidance
import numpy as np

# Characters tried in this order: close what is open, then the shortest values.
PREFERRED = '"}]01tnfa,:-.e[{'
# The wider set the second pass probes (formats such as email or duration need their separators).
PROBES = PREFERRED + "@PDTZ+/ A"
BRANCHES = 3
WALKS = 4


@dataclass
class _Budget:
    steps: int

    def spend(self) -> bool:
        self.steps -= 1
        return self.steps >= 0


@dataclass
class Closer:
    """Finds endings for matchers built on one tokenizer."""

    tokenizer: llguidance.LLTokenizer
    max_steps: int
    max_tokens: int
    preferred: list[int] = field(default_factory=list)
    probes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for chars, ids in ((PREFERRED, self.preferred), (PROBES, self.probes)):
            for char in chars:
                tokens = self.tokenizer.tokenize_str(char)
                if len(tokens) == 1:
                    ids.append(tokens[0])
        self._eos = set(self.tokenizer.eos_tokens)
        self._words = (self.tokenizer.vocab_size + 31) // 32

    def ending(self, matcher: llguidance.LLMatcher, limit: int | None = None) -> list[int] | None:
        """Tokens (at most ``limit``) after which ``matcher`` accepts; ``None`` if none was found.

        ``matcher`` is left as it was (every token consumed is rolled back)."""
        room = self.max_tokens if limit is None else min(limit, self.max_tokens)
        if room <= 0:
            return [] if matcher.is_accepting() else None
        path: list[int] = []
        found = self._search(matcher, room, path, _Budget(self.max_steps // 4), None)
        if not found:  # the quick pass went astray: again, preferring tokens that change what may follow
            found = self._search(matcher, room, path, _Budget(self.max_steps // 2), set())
        if not found:  # formats with separators (a@b.cc): random walks over the probes, seeded
            found = self._walks(matcher, room, path, _Budget(self.max_steps))
        if path:
            matcher.rollback(len(path))
        return self._compact(matcher, path) if found else None

    def _compact(self, matcher: llguidance.LLMatcher, path: list[int]) -> list[int]:
        """The same bytes in fewer tokens when the tokenizer has them (the search goes a byte at a time)."""
        shorter = self.tokenizer.tokenize_bytes(self.tokenizer.decode_bytes(path))
        if len(shorter) >= len(path) or matcher.validate_tokens(shorter) != len(shorter):
            return path
        if not matcher.consume_tokens(shorter):
            return path  # (validated above: not reached)
        accepting = matcher.is_accepting()
        matcher.rollback(len(shorter))
        return shorter if accepting else path

    def _search(
        self, m: llguidance.LLMatcher, room: int, path: list[int], budget: _Budget, seen: set[tuple[int, ...]] | None
    ) -> bool:
        if m.is_error():
            return False
        if m.is_accepting():
            return True
        if room <= 0 or not budget.spend():
            return False
        forced = m.compute_ff_tokens()
        if forced:
            taken = m.try_consume_tokens(forced[:room])
            if taken == 0:
                return False
            path.extend(forced[:taken])
            if self._search(m, room - taken, path, budget, seen):
                return True
            m.rollback(taken)
            del path[-taken:]
            return False
        for token in self._children(m) if seen is None else self._progress(m, seen):
            if not m.consume_token(token):
                return False
            path.append(token)
            if self._search(m, room - 1, path, budget, seen):
                return True
            m.rollback(1)
            path.pop()
            if budget.steps <= 0:
                break
        return False

    def _children(self, m: llguidance.LLMatcher) -> list[int]:
        children = [t for t in self.preferred if m.validate_tokens([t]) == 1][:BRANCHES]
        if children:
            return children
        mask = np.zeros(self._words, dtype=np.uint32)
        m.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
        allowed = np.flatnonzero(np.unpackbits(mask.view(np.uint8), bitorder="little"))
        return [int(t) for t in allowed if int(t) not in self._eos][:BRANCHES]

    def _signature(self, m: llguidance.LLMatcher) -> tuple[int, ...]:
        return tuple(t for t in self.probes if m.validate_tokens([t]) == 1)

    def _progress(self, m: llguidance.LLMatcher, seen: set[tuple[int, ...]]) -> list[int]:
        """Allowed probes that lead somewhere new (what may follow changes), accepting ones first;
        one that changes nothing (a string's next character) only when none does."""
        valid = self._signature(m)
        if not valid:
            return self._children(m)
        seen.add(valid)
        accepting, new, same = [], [], []
        for token in valid:
            m.consume_token(token)
            signature, accepts = self._signature(m), m.is_accepting()
            m.rollback(1)
            if accepts:
                accepting.append(token)
            elif signature not in seen:
                seen.add(signature)
                new.append(token)
            else:
                same.append(token)
        return accepting[:1] or new or same[:1]

    def _walks(self, m: llguidance.LLMatcher, room: int, path: list[int], budget: _Budget) -> bool:
        """Seeded random walks; the shortest of the first few that end is kept."""
        rng = random.Random(0)  # noqa: S311  (a search order, not a secret: seeded to be repeatable)
        best: list[int] | None = None
        for _ in range(WALKS * 8):
            if not budget.spend():
                break
            if self._walk(m, room if best is None else len(best) - 1, path, budget, rng):
                best = list(path)
            if path:
                m.rollback(len(path))
                path.clear()
            if best is not None and budget.steps < self.max_steps // 2:
                break
        if best is None or not m.consume_tokens(best):
            return False
        path.extend(best)
        return True

    def _walk(self, m: llguidance.LLMatcher, room: int, path: list[int], budget: _Budget, rng: random.Random) -> bool:
        """One random walk: forced tokens, else a token that ends it, else an allowed probe that
        changes what may follow (any allowed one when none does)."""
        while len(path) < room and budget.spend() and not m.is_error():
            if m.is_accepting():
                return True
            forced = m.compute_ff_tokens()[: room - len(path)]
            if forced:
                choice = forced[0]
            else:
                valid = list(self._signature(m)) or self._children(m)
                if not valid:
                    return False
                ending = next((t for t in valid if self._ends(m, t)), None)
                choice = ending if ending is not None else rng.choice(self._moving(m, valid) or valid)
            if not m.consume_token(choice):
                return False
            path.append(choice)
        return m.is_accepting()

    def _moving(self, m: llguidance.LLMatcher, valid: list[int]) -> list[int]:
        here = tuple(valid)
        moving = []
        for token in valid:
            m.consume_token(token)
            if self._signature(m) != here:
                moving.append(token)
            m.rollback(1)
        return moving

    @staticmethod
    def _ends(m: llguidance.LLMatcher, token: int) -> bool:
        if not m.consume_token(token):
            return False
        accepting = m.is_accepting()
        m.rollback(1)
        return accepting
