"""Grammar-constrained sampling at nearly the cost of free sampling.

Applying a llama.cpp grammar to every token of a 49k vocabulary costs more than the rest of the
step. Like llama.cpp's own common sampler, chatgate first samples without the grammar and asks the
grammar about that one token; only when it is refused are the full logits run through the grammar
and sampled again. The result is the same distribution as grammar-then-sample: a token the
grammar allows is kept, one it forbids is redrawn from the allowed ones.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import llama_cpp
import numpy as np

TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


class ConstrainedSampler:
    """Samples with ``chain`` under ``grammar``; owns neither (the sequence frees them)."""

    def __init__(self, chain: Any, grammar: Any, n_vocab: int) -> None:
        self.chain = chain
        self.grammar = grammar
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._candidates = np.zeros(n_vocab, dtype=TOKEN_DATA)
        self._one = np.zeros(1, dtype=TOKEN_DATA)
        self.rejections = 0

    def sample(self, ctx: Any, index: int) -> int:
        pointer = llama_cpp.llama_get_logits_ith(ctx, index)
        logits = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=self._ids.shape)
        token = self._select(logits, with_grammar=False)
        if not self._allowed(token, float(logits[token])):
            self.rejections += 1
            token = self._select(logits, with_grammar=True)
        llama_cpp.llama_sampler_accept(self.grammar, token)
        llama_cpp.llama_sampler_accept(self.chain, token)
        return token

    def _select(self, logits: Any, *, with_grammar: bool) -> int:
        candidates = self._candidates
        candidates["id"] = self._ids
        candidates["logit"] = logits
        candidates["p"] = 0.0
        array = _array(candidates)
        if with_grammar:
            llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(array))
        llama_cpp.llama_sampler_apply(self.chain, ctypes.byref(array))
        token: int = array.data[array.selected].id
        return token

    def _allowed(self, token: int, logit: float) -> bool:
        one = self._one
        one[0] = (token, logit, 0.0)
        array = _array(one)
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(array))
        return math.isfinite(array.data[0].logit)


def _array(data: Any) -> Any:
    return llama_cpp.llama_token_data_array(
        data=data.ctypes.data_as(llama_cpp.llama_token_data_p), size=len(data), selected=-1, sorted=False
    )
