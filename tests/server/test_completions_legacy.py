"""Legacy text completions (``POST /v1/completions``) on the real server and the real local model, with the
official ``openai`` SDK's ``client.completions.create`` and raw HTTP for the stream's bytes."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import httpx
import openai
import pytest

from chatgate.backends.local.llama import GGUFModel

MODEL = "smollm2-135m-instruct"
COUNT = "1, 2, 3,"


def greedy(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.completions.create(model=MODEL, temperature=0, **kwargs)


def test_a_raw_prompt_is_completed_without_the_chat_template(client: openai.OpenAI, vocab: GGUFModel) -> None:
    r = greedy(client, prompt="The capital of France is", max_tokens=8)
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == MODEL
    assert len(r.choices) == 1 and r.choices[0].text and r.choices[0].finish_reason == "length"
    prompt = vocab.tokenize("The capital of France is", add_special=True, parse_special=False)
    assert r.usage.prompt_tokens == len(prompt) and r.usage.completion_tokens == 8  # no template around it
    asked: Any = [{"role": "user", "content": "The capital of France is"}]
    chat = client.chat.completions.create(model=MODEL, messages=asked, max_tokens=1)
    assert chat.usage is not None and chat.usage.prompt_tokens > r.usage.prompt_tokens + 5


def test_max_tokens_defaults_to_16_as_openais(client: openai.OpenAI) -> None:
    r = greedy(client, prompt="Once upon a time")
    assert r.usage.completion_tokens <= 16
    if r.choices[0].finish_reason == "length":
        assert r.usage.completion_tokens == 16


def test_a_token_array_prompt_is_the_same_prompt(client: openai.OpenAI, vocab: GGUFModel) -> None:
    tokens = vocab.tokenize("The capital of France is", add_special=True, parse_special=False)
    as_text = greedy(client, prompt="The capital of France is", max_tokens=6)
    as_tokens = greedy(client, prompt=[tokens], max_tokens=6)
    also = greedy(client, prompt=tokens, max_tokens=6)
    assert as_tokens.choices[0].text == as_text.choices[0].text == also.choices[0].text
    assert as_tokens.usage.prompt_tokens == len(tokens)


def test_echo_puts_the_prompt_before_the_completion(client: openai.OpenAI) -> None:
    plain = greedy(client, prompt=COUNT, max_tokens=6).choices[0].text
    echoed = greedy(client, prompt=COUNT, max_tokens=6, echo=True).choices[0].text
    assert echoed == COUNT + plain


def test_stop_sequences_stop_the_text_and_never_leak(client: openai.OpenAI) -> None:
    free = greedy(client, prompt=COUNT, max_tokens=20).choices[0].text
    assert " 5," in free
    r = greedy(client, prompt=COUNT, max_tokens=20, stop=[" 5"])
    assert r.choices[0].text == free[: free.index(" 5")] and r.choices[0].finish_reason == "stop"
    streamed = greedy(client, prompt=COUNT, max_tokens=20, stop=" 5", stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == r.choices[0].text


def test_logprobs_come_in_the_legacy_shape(client: openai.OpenAI) -> None:
    r = greedy(client, prompt="The capital of France is", max_tokens=5, logprobs=3)
    choice = r.choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset
    assert "".join(lp.tokens) == choice.text and len(lp.tokens) == 5
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(5)]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob is not None and logprob <= 0 and top is not None and len(top) == 3
        assert top[token] == logprob == max(top.values())  # greedy: the chosen token is the likeliest
    assert all(sum(math.exp(v) for v in top.values()) <= 1 + 1e-6 for top in lp.top_logprobs if top is not None)


def test_n_gives_n_choices(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5, n=3, seed=1)
    assert sorted(c.index for c in r.choices) == [0, 1, 2] and r.usage is not None and r.usage.completion_tokens == 15
    best = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5, n=2, best_of=2)
    assert len(best.choices) == 2


def test_the_sdk_stream_reassembles_to_the_plain_answer(client: openai.OpenAI) -> None:
    plain = greedy(client, prompt=COUNT, max_tokens=8, echo=True)
    chunks = list(greedy(client, prompt=COUNT, max_tokens=8, echo=True, stream=True,
                         stream_options={"include_usage": True}))  # fmt: skip
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text
    assert chunks[0].choices[0].text.startswith(COUNT)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens == 8


def test_the_stream_bytes(http: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": COUNT, "max_tokens": 4, "stream": True, "logprobs": 1}
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.endswith("data: [DONE]\n\n")
    events = [json.loads(e[len("data: ") :]) for e in r.text.split("\n\n")[:-2]]
    assert all(e["object"] == "text_completion" and "usage" not in e for e in events)
    texts = [e["choices"][0]["text"] for e in events if e["choices"][0]["logprobs"]]
    offsets = [e["choices"][0]["logprobs"]["text_offset"][0] for e in events if e["choices"][0]["logprobs"]]
    assert offsets == [sum(len(t) for t in texts[:i]) for i in range(len(texts))]
    assert re.fullmatch(r"(data: \{.*\}\n\n)+data: \[DONE\]\n\n", r.text)


BAD: list[tuple[dict[str, Any], str]] = [
    ({"prompt": "x", "suffix": "y"}, "suffix"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": "x", "best_of": 3}, "best_of"),
    ({"prompt": [[999999]]}, "prompt"),
    ({"prompt": "x", "echo": True, "logprobs": 1}, "echo"),
    ({"prompt": "x", "logprobs": 6}, "logprobs"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({}, "prompt"),
]


@pytest.mark.parametrize(("fields", "param"), BAD)
def test_bad_requests_are_400_with_param(http: httpx.Client, fields: dict[str, Any], param: str) -> None:
    r = http.post("/v1/completions", json={"model": MODEL, "max_tokens": 2, **fields})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"


def test_an_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=2)


def test_the_exchange_is_metered_as_completions(client: openai.OpenAI, http: httpx.Client) -> None:
    greedy(client, prompt="x", max_tokens=1)
    assert re.search(r'chatgate_gateway_requests_total\{endpoint="completions",status="200"\} [1-9]',
                     http.get("/metrics").text)  # fmt: skip


def test_the_response_cache_holds_for_completions(http: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": "Cache me:", "max_tokens": 4, "temperature": 0}
    first, second = (http.post("/v1/completions", json=body, headers={"x-chatgate-cache": "1"}) for _ in range(2))
    assert (first.headers["x-chatgate-cache"], second.headers["x-chatgate-cache"]) == ("miss", "hit")
    assert first.json()["choices"] == second.json()["choices"]
    streamed = http.post("/v1/completions", json={**body, "stream": True}, headers={"x-chatgate-cache": "1"})
    assert streamed.headers["x-chatgate-cache"] == "hit"
    texts = [json.loads(e[len("data: ") :])["choices"] for e in streamed.text.split("\n\n")[:-2]]
    assert "".join(c[0]["text"] for c in texts if c) == first.json()["choices"][0]["text"]
    chat = http.post("/v1/chat/completions", headers={"x-chatgate-cache": "1"},
                     json={"model": MODEL, "messages": [{"role": "user", "content": "Cache me:"}], "max_tokens": 4,
                           "temperature": 0})  # fmt: skip
    assert chat.headers["x-chatgate-cache"] == "miss"  # a raw prompt is not the same request as a chat turn
