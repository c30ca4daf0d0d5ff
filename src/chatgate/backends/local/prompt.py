"""The prompt's tokens, with request text kept apart from the chat template's control tokens.

llama.cpp turns the text of a control token (``<|im_end|>``, ``<|im_start|>``…) into that token when
it tokenises with special tokens parsed, wherever the text comes from. A message could then close its
own turn and open a forged ``system`` or ``assistant`` one. Only the template's own markup may carry
control tokens; everything the request supplies (message content, names, tool calls and results, tool
definitions) is text.

How: before the template renders, every request string is *shielded*: each control-token text inside
it, and any head or tail of it that could join the text around it into a control token, is replaced
by a placeholder, one character of Unicode's Supplementary Private Use Area-B (request text holding
such characters has them replaced too, so every one in the rendered text is ours). No template
treats that character specially, and a single character cannot be cut in half: ``| trim``,
slicing, ``tojson`` and the like act on the rest of the string as they would on the original.
After rendering, the placeholders are put back and remembered as *protected spans*. The
prompt is then cut only at control-token texts lying wholly outside protected spans — the template's
markup — and each piece between them is tokenised with special tokens *not* parsed. That is exactly
what llama.cpp does for the whole text with special tokens parsed (partition at control tokens, then
tokenise each piece, honouring the tokens' lstrip/rstrip attributes), so BPE merges across the
boundary between markup and message text are the same as before; the only difference is that a
control-token text inside request text stays text. For a request that holds no such text (nearly
always) the tokens are identical to llama.cpp's, and the same conversation always gives the same
tokens, so the prefix cache works as before.

Cutting here rather than in llama.cpp also keeps the cost linear: llama.cpp's partition is quadratic in
the number of control tokens in the text (30,000 short messages: 18.7 s there, 1.5 s here).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from chatgate.backends.local.llama import GGUFModel
from chatgate.errors import InvalidRequestError

_SPACE = " \t\n\v\f\r"  # C isspace(), as llama.cpp strips around lstrip/rstrip tokens
_PLACEHOLDER_BASE = 0x100000
_PLACEHOLDERS = 0xFFFE  # U+100000..U+10FFFD
_PLANE_16 = "\U00100000-\U0010ffff"


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered chat template; ``protected`` are the ``[start, end)`` spans of request text
    holding (parts of) control-token texts, which must be tokenised as text."""

    text: str
    protected: tuple[tuple[int, int], ...] = ()


class ControlTokens:
    """The texts llama.cpp reads as control tokens when it parses special tokens."""

    def __init__(self, ids: dict[str, int], *, lstrip: Iterable[str] = (), rstrip: Iterable[str] = ()) -> None:
        texts = sorted((t for t in ids if t), key=len, reverse=True)  # longest first, as llama.cpp matches
        self.ids = {t: ids[t] for t in texts}
        self.lstrip = frozenset(lstrip)
        self.rstrip = frozenset(rstrip)
        self.pattern = re.compile("|".join(map(re.escape, texts))) if texts else None
        self._risky = re.compile("|".join([*map(re.escape, texts), f"[{_PLANE_16}]"]))
        self._prefixes = {t[:k] for t in texts for k in range(1, len(t))}
        self._suffixes = {t[k:] for t in texts for k in range(1, len(t))}
        self._prefix_ends = {p[-1] for p in self._prefixes}
        self._suffix_starts = {p[0] for p in self._suffixes}
        self._longest = len(texts[0]) if texts else 0

    @classmethod
    def of(cls, model: GGUFModel) -> ControlTokens:
        """Every CONTROL or UNKNOWN token of ``model``'s vocabulary (user-defined tokens are matched
        by llama.cpp in plain text too, as Hugging Face tokenizers match added tokens)."""
        ids: dict[str, int] = {}
        lstrip: list[str] = []
        rstrip: list[str] = []
        for token in range(model.n_vocab):
            attr = model.token_attr(token)
            if attr & (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN):
                text = model.token_text(token)
                ids.setdefault(text, token)
                if attr & llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP:
                    lstrip.append(text)
                if attr & llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP:
                    rstrip.append(text)
        return cls(ids, lstrip=lstrip, rstrip=rstrip)

    def risky_spans(self, text: str) -> list[tuple[int, int]]:
        """Spans of ``text`` to protect: control-token texts in it, a head that could end one begun
        before it, a tail that could begin one ended after it, and any placeholder-range character.
        Sorted and disjoint."""
        spans = [m.span() for m in self._risky.finditer(text)]
        reach = min(self._longest - 1, len(text))
        head = tail = 0
        if reach and text[0] in self._suffix_starts:
            head = next((k for k in range(reach, 0, -1) if text[:k] in self._suffixes), 0)
        if reach and text[-1] in self._prefix_ends:
            tail = next((k for k in range(reach, 0, -1) if text[-k:] in self._prefixes), 0)
        if head:
            spans.append((0, head))
        if tail:
            spans.append((len(text) - tail, len(text)))
        merged: list[tuple[int, int]] = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return merged

    def markup(self, prompt: RenderedPrompt) -> list[tuple[int, int, int]]:
        """``(start, end, token)`` of each control-token text wholly outside the protected spans."""
        if self.pattern is None:
            return []
        found: list[tuple[int, int, int]] = []
        start = 0
        for begin, end in [*prompt.protected, (len(prompt.text), len(prompt.text))]:
            for m in self.pattern.finditer(prompt.text, start, begin):
                found.append((m.start(), m.end(), self.ids[m.group()]))
            start = end
        return found


@dataclass
class Shield:
    """One render's placeholders: :meth:`value` shields request values, :meth:`restore` undoes it."""

    control: ControlTokens
    originals: list[str] = field(default_factory=list)
    _done: dict[str, str] = field(default_factory=dict)
    """Strings already shielded in this render (dict keys and roles repeat in every message)."""

    def value(self, value: Any) -> Any:
        """``value`` (a string, or JSON-like lists and dicts of them) with risky spans replaced."""
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def _text(self, text: str) -> str:
        done = self._done.get(text)
        if done is None:
            done = self._done[text] = self._shield(text)
        return done

    def _shield(self, text: str) -> str:
        spans = self.control.risky_spans(text)
        if not spans:
            return text
        if len(self.originals) + len(spans) > _PLACEHOLDERS:
            spans = [(spans[0][0], spans[-1][1])]  # protect more text with fewer placeholders
            if len(self.originals) >= _PLACEHOLDERS:
                raise InvalidRequestError(
                    "Too many strings in this request hold the model's control-token text.",
                    param="messages",
                    code="invalid_value",
                )
        out: list[str] = []
        done = 0
        for start, end in spans:
            out.append(text[done:start])
            out.append(chr(_PLACEHOLDER_BASE + len(self.originals)))
            self.originals.append(text[start:end])
            done = end
        out.append(text[done:])
        return "".join(out)

    def restore(self, rendered: str) -> RenderedPrompt:
        """The rendered text with the original strings back, and where they are."""
        if not self.originals:
            return RenderedPrompt(rendered)
        out: list[str] = []
        protected: list[tuple[int, int]] = []
        size = done = 0
        for m in re.finditer(f"[{_PLANE_16}]", rendered):
            index = ord(m.group()) - _PLACEHOLDER_BASE
            if index >= len(self.originals):
                continue  # the template's own character
            original = self.originals[index]
            out.append(rendered[done : m.start()])
            size += m.start() - done
            protected.append((size, size + len(original)))
            out.append(original)
            size += len(original)
            done = m.end()
        out.append(rendered[done:])
        return RenderedPrompt("".join(out), tuple(protected))


def tokenize_prompt(model: GGUFModel, control: ControlTokens, prompt: RenderedPrompt) -> list[int]:
    """The prompt's tokens: control tokens only where the template's markup writes them, a BOS token
    first when the vocabulary wants one and the template did not write it."""
    bos = model.bos_id()
    tokens = tokenize_pieces(model, control, prompt)
    if model.adds_bos() and bos >= 0 and not (tokens and tokens[0] == bos):
        tokens.insert(0, bos)
    return tokens


def tokenize_pieces(model: GGUFModel, control: ControlTokens, prompt: RenderedPrompt) -> list[int]:
    """Cut at the markup's control tokens; each piece between them is text (special tokens not parsed)."""
    text = prompt.text
    tokens: list[int] = []
    done = 0
    previous = ""
    for start, end, token in control.markup(prompt):
        piece = text[done:start]
        if previous in control.rstrip:
            piece = piece.lstrip(_SPACE)
        if text[start:end] in control.lstrip:
            piece = piece.rstrip(_SPACE)
        if piece:
            tokens += model.tokenize(piece, add_special=False, parse_special=False)
        tokens.append(token)
        done, previous = end, text[start:end]
    piece = text[done:]
    if previous in control.rstrip:
        piece = piece.lstrip(_SPACE)
    if piece:
        tokens += model.tokenize(piece, add_special=False, parse_special=False)
    return tokens
