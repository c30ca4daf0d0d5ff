"""The legacy completions' protocol models and the logprobs conversion."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chatgate.protocol import ChoiceLogprobs, TokenLogprob, TopLogprob
from chatgate.protocol.text_completions import Completion, CompletionRequest, legacy_logprobs


def test_every_prompt_form_parses_and_max_tokens_defaults_to_16() -> None:
    for prompt in ("hi", ["hi"], [1, 2], [[1, 2]]):
        req = CompletionRequest.model_validate({"model": "m", "prompt": prompt})
        assert req.prompt == prompt and req.max_tokens == 16
    bad_prompts: list[object] = [[], [[]], [-1], 5, [1, "a"]]
    for bad in bad_prompts:
        with pytest.raises(ValidationError):
            CompletionRequest.model_validate({"model": "m", "prompt": bad})


def test_logprobs_become_parallel_arrays_with_text_offsets() -> None:
    def token(text: str, lp: float) -> TokenLogprob:
        top = [TopLogprob(token=text, logprob=lp, bytes=None)]
        return TokenLogprob(token=text, logprob=lp, bytes=None, top_logprobs=top)

    out = legacy_logprobs(ChoiceLogprobs(content=[token("Hel", -0.1), token("lo", -0.2)]), offset=4)
    assert out is not None
    assert (out.tokens, out.token_logprobs, out.text_offset) == (["Hel", "lo"], [-0.1, -0.2], [4, 7])
    assert out.top_logprobs == [{"Hel": -0.1}, {"lo": -0.2}]
    assert legacy_logprobs(None, 0) is None


def test_a_chunk_leaves_usage_out_unless_asked() -> None:
    chunk = Completion(id="cmpl-1", created=0, model="m", choices=[])
    assert "usage" not in chunk.chunk_json(include_usage=False)
    assert '"usage":null' in chunk.chunk_json(include_usage=True)
