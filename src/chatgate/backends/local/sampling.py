"""Sampling parameters and llama.cpp sampler chains built from them.

All per-token sampling work happens in llama.cpp's C samplers; Python only builds the chain.
The chain order is llama.cpp's own: logit bias, penalties, top-k, top-p, min-p, temperature, then
the seeded distribution (or greedy at temperature 0).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

import llama_cpp

from chatgate.protocol import ChatCompletionRequest

DEFAULT_TEMPERATURE = 1.0  # OpenAI's default
DEFAULT_TOP_P = 1.0


@dataclass(frozen=True)
class SamplingParams:
    """How to choose each next token. Defaults are OpenAI's."""

    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = 0
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int = 0

    @classmethod
    def from_request(cls, req: ChatCompletionRequest) -> SamplingParams:
        """The parameters of choice 0; a request without ``seed`` gets a random one."""
        return cls(
            temperature=DEFAULT_TEMPERATURE if req.temperature is None else req.temperature,
            top_p=DEFAULT_TOP_P if req.top_p is None else req.top_p,
            top_k=req.top_k or 0,
            min_p=req.min_p or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            presence_penalty=req.presence_penalty or 0.0,
            repetition_penalty=req.repetition_penalty or 1.0,
            logit_bias={int(k): v for k, v in (req.logit_bias or {}).items()},
            seed=req.seed if req.seed is not None else random.getrandbits(32),
        )

    def for_choice(self, index: int) -> SamplingParams:
        """Choice ``index`` of ``n``: the same parameters with its own seed, so choices differ
        yet the same request with the same seed gives the same choices."""
        return replace(self, seed=(self.seed + index) & 0xFFFFFFFF)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def build_chain(params: SamplingParams, n_vocab: int, penalty_window: int, grammar: Any = None) -> Any:
    """A new llama.cpp sampler chain; the caller frees it with ``llama_sampler_free``.

    ``grammar`` (a grammar sampler the chain takes ownership of) comes right after the logit bias,
    so no bias can force a token the grammar forbids."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    if params.logit_bias:
        biases = (llama_cpp.llama_logit_bias * len(params.logit_bias))()
        for i, (token, bias) in enumerate(params.logit_bias.items()):
            biases[i].token = token
            biases[i].bias = -1e30 if bias <= -100 else bias
        add(chain, llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias), biases))
    if grammar is not None:
        add(chain, grammar)
    if params.frequency_penalty or params.presence_penalty or params.repetition_penalty != 1.0:
        add(
            chain,
            llama_cpp.llama_sampler_init_penalties(
                n_vocab,
                penalty_window,
                params.repetition_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            ),
        )
    if params.greedy:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    if params.top_k > 0:
        add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
    if params.top_p < 1.0:
        add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
    if params.min_p > 0.0:
        add(chain, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
    add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
    add(chain, llama_cpp.llama_sampler_init_dist(params.seed))
    return chain
