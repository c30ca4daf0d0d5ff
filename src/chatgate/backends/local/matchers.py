"""Compiled grammars for one model: llguidance matchers with budgets, checked and cached.

Compiling validates the grammar against the model's tokenizer within llguidance's limits (the
same limits bound every later step: a mask past its fuel puts the matcher in an error state
instead of holding the engine), then proves the grammar accepts some document (see
:mod:`closing`). Results are kept in an LRU by grammar text (schemas are canonicalised, so the same
schema written differently shares an entry). Callers run :meth:`compile` off the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import llguidance

from chatgate.backends.local.closing import Closer
from chatgate.backends.local.grammar import GrammarSpec
from chatgate.backends.local.schemabounds import schema_error
from chatgate.config import StructuredOutputConfig
from chatgate.errors import InvalidRequestError

log = logging.getLogger("chatgate.grammar")


@dataclass(frozen=True)
class CompiledGrammar:
    matcher: llguidance.LLMatcher
    """Pristine (never consumed): each sequence gets a deep copy."""
    shortest: int
    """Tokens in the shortest document found from the start."""


def parser_limits(config: StructuredOutputConfig) -> llguidance.LLParserLimits:
    return llguidance.LLParserLimits(
        step_lexer_fuel=config.step_lexer_fuel,
        step_max_items=config.step_max_items,
        max_grammar_size=config.max_grammar_size,
        max_lexer_states=config.max_lexer_states,
        initial_lexer_fuel=config.initial_lexer_fuel,
        verbose_errors=False,
    )


class GrammarCompiler:
    """Turns :class:`GrammarSpec` into matchers for one tokenizer; thread-safe."""

    def __init__(self, tokenizer: llguidance.LLTokenizer, config: StructuredOutputConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.limits = parser_limits(config)
        self.closer = Closer(tokenizer, config.close_search_nodes, config.close_max_tokens)
        self._cache: OrderedDict[str, CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def compile(self, spec: GrammarSpec) -> CompiledGrammar:
        """The compiled grammar for ``spec``; a 400 naming ``spec.where`` if it is invalid, past a
        limit, or accepts no document."""
        for part in spec.parts:
            self.compile(part)
        with self._lock:
            cached = self._cache.get(spec.text)
            if cached is not None:
                self._cache.move_to_end(spec.text)
                self.hits += 1
                return cached
            self.misses += 1
        compiled = self._build(spec)
        with self._lock:
            self._cache[spec.text] = compiled
            while len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return compiled

    def matchers(self, spec: GrammarSpec, count: int) -> list[llguidance.LLMatcher]:
        """``count`` fresh matchers for ``spec`` (compiling it first if needed)."""
        compiled = self.compile(spec)
        with self._lock:
            return [compiled.matcher.deep_copy() for _ in range(count)]

    def _build(self, spec: GrammarSpec) -> CompiledGrammar:
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
            spec.text, self.tokenizer, limits=self.limits
        )
        if failed:
            raise _invalid(spec.where, messages[0] if messages else "the grammar is invalid")
        matcher = llguidance.LLMatcher(self.tokenizer, spec.text, limits=self.limits, log_level=0)
        if matcher.is_error():
            raise _invalid(spec.where, matcher.get_error())
        probe = matcher.deep_copy()
        ending = self.closer.ending(probe)
        if ending is None:
            raise schema_error(
                spec.where,
                "#",
                "no JSON document satisfies this schema (none was found within "
                f"{self.config.close_search_nodes} search steps and {self.config.close_max_tokens} tokens)",
            )
        return CompiledGrammar(matcher, len(ending))

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._cache))


def _invalid(where: str, message: str) -> InvalidRequestError:
    first = message.strip().splitlines()[0] if message.strip() else "the grammar is invalid"
    if first.startswith("regex parse error"):
        text = "a 'pattern' is not a valid regular expression: " + " ".join(message.split()[3:])[:300]
    else:
        text = first[:400]
    log.debug("grammar refused for %s: %s", where, text)
    return schema_error(where, "#", f"the schema cannot be compiled: {text}")
