"""The official SDK against the real server and model: every parameter has an observable effect."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from chatgate.backends.local.llama import GGUFModel

MODEL_ID = "smollm2-135m-instruct"
EOS = 2  # <|im_end|> in SmolLM2's vocabulary
QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What's the capital of France?"},
]
EXTENSIONS = ("top_k", "min_p", "repetition_penalty")  # chatgate's own fields go in extra_body
STORY = [{"role": "user", "content": "Tell me a long story about a dragon and a castle."}]


def ask(client: openai.OpenAI, **kwargs: Any) -> Any:
    args: dict[str, Any] = {"model": "gpt-4", "messages": STORY, "max_tokens": 24, "temperature": 0}
    args.update(kwargs)
    extensions = {k: args.pop(k) for k in EXTENSIONS if k in args}
    if extensions:
        args["extra_body"] = {**args.get("extra_body", {}), **extensions}
    return client.chat.completions.create(**args)


def text(client: openai.OpenAI, **kwargs: Any) -> str:
    content = ask(client, **kwargs).choices[0].message.content
    assert isinstance(content, str)
    return content


def test_the_documentation_example_runs_unchanged(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4", messages=QUESTION, temperature=0.7, max_tokens=150)  # type: ignore[arg-type]
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert isinstance(r.created, int)
    assert r.model == MODEL_ID  # the model that really answered, not the alias
    assert r.system_fingerprint and r.system_fingerprint.startswith("fp_")
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.message.refusal is None
    assert choice.finish_reason in ("stop", "length")
    assert choice.logprobs is None
    assert r.usage is not None
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert 0 < r.usage.completion_tokens <= 150


@pytest.mark.parametrize("name", [MODEL_ID, f"local/{MODEL_ID}", "gpt-4o-mini", "gpt-3.5-turbo"])
def test_model_names_and_aliases_reach_the_local_model(client: openai.OpenAI, name: str) -> None:
    assert ask(client, model=name, max_tokens=2).model == MODEL_ID


def test_max_tokens_bounds_the_completion_and_reports_length(client: openai.OpenAI) -> None:
    r = ask(client, max_tokens=7)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 7


def test_max_completion_tokens_wins_over_max_tokens(client: openai.OpenAI) -> None:
    r = ask(client, max_tokens=20, max_completion_tokens=5)
    assert r.usage.completion_tokens == 5


def test_end_of_turn_token_finishes_with_stop(client: openai.OpenAI) -> None:
    r = ask(client, logit_bias={str(EOS): 100})
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == ""
    assert r.usage.completion_tokens == 0


def test_usage_counts_every_token_exactly(client: openai.OpenAI) -> None:
    r = ask(client, max_tokens=16, logprobs=True)
    assert r.usage.completion_tokens == len(r.choices[0].logprobs.content) == 16
    longer = ask(client, messages=[*STORY, {"role": "assistant", "content": "Once"}, *STORY], max_tokens=1)
    assert longer.usage.prompt_tokens > r.usage.prompt_tokens


def test_temperature_zero_is_deterministic(client: openai.OpenAI) -> None:
    assert text(client, seed=1) == text(client, seed=2)


def test_seed_reproduces_sampled_output_and_other_seeds_differ(client: openai.OpenAI) -> None:
    a = text(client, temperature=1.2, seed=1234)
    assert a == text(client, temperature=1.2, seed=1234)
    others = {text(client, temperature=1.2, seed=s) for s in (1, 2, 3)}
    assert others != {a}


@pytest.mark.parametrize("narrow", [{"top_k": 1}, {"top_p": 0.0}, {"min_p": 1.0}])
def test_narrow_sampling_equals_greedy(client: openai.OpenAI, narrow: dict[str, Any]) -> None:
    greedy = text(client)
    sampled = {text(client, temperature=1.5, seed=s, **narrow) for s in (7, 8)}
    assert sampled == {greedy}


def test_wide_sampling_differs_from_greedy(client: openai.OpenAI) -> None:
    greedy = text(client)
    assert {text(client, temperature=1.5, seed=s, top_k=0, top_p=1.0) for s in (7, 8, 9)} != {greedy}


@pytest.mark.parametrize(
    "penalty", [{"frequency_penalty": 2.0}, {"presence_penalty": 2.0}, {"repetition_penalty": 1.8}]
)
def test_penalties_change_the_output(client: openai.OpenAI, penalty: dict[str, Any]) -> None:
    plain = text(client, messages=QUESTION, max_tokens=48)
    assert text(client, messages=QUESTION, max_tokens=48, **penalty) != plain


def test_negative_frequency_penalty_encourages_repetition(client: openai.OpenAI) -> None:
    plain = ask(client, max_tokens=40, logprobs=True).choices[0].logprobs.content
    repeated = ask(client, max_tokens=40, logprobs=True, frequency_penalty=-2.0).choices[0].logprobs.content
    assert len({t.token for t in repeated}) < len({t.token for t in plain})


def test_logit_bias_bans_and_forces_tokens(client: openai.OpenAI, vocab: GGUFModel) -> None:
    first = ask(client, max_tokens=1, logprobs=True).choices[0].logprobs.content[0]
    (banned_id,) = vocab.tokenize(first.token, add_special=False, parse_special=False)
    after_ban = ask(client, max_tokens=1, logprobs=True, logit_bias={str(banned_id): -100})
    assert after_ban.choices[0].logprobs.content[0].token != first.token
    forced = ask(client, max_tokens=5, logit_bias={"7042": 100}).choices[0].message.content
    assert forced == vocab.piece(7042).decode() * 5


def test_logit_bias_outside_the_vocabulary_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, logit_bias={"999999": 5})
    assert err.value.body["param"] == "logit_bias"  # type: ignore[index]


def test_logprobs_have_openai_shape(client: openai.OpenAI) -> None:
    r = ask(client, max_tokens=6, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == 6
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for entry in content:
        assert entry.logprob <= 0
        assert bytes(entry.bytes).decode("utf-8", errors="replace") == entry.token
        assert len(entry.top_logprobs) == 3
        tops = [t.logprob for t in entry.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert entry.top_logprobs[0].token == entry.token  # greedy picks the most likely
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)


def test_logprobs_without_top_logprobs_have_empty_alternatives(client: openai.OpenAI) -> None:
    content = ask(client, max_tokens=3, logprobs=True).choices[0].logprobs.content
    assert [t.top_logprobs for t in content] == [[], [], []]


def test_n_gives_n_distinct_choices_with_their_own_usage(client: openai.OpenAI) -> None:
    r = ask(client, n=3, temperature=1.0, seed=5, max_tokens=12)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) > 1
    assert r.usage.completion_tokens == 36
    again = ask(client, n=3, temperature=1.0, seed=5, max_tokens=12)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]


def test_stop_sequences_end_generation_and_never_appear(client: openai.OpenAI) -> None:
    full = text(client, max_tokens=40)
    stop = full[10:14]
    assert stop and full.index(stop) >= 1
    r = ask(client, max_tokens=40, stop=stop)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[: full.index(stop)]
    r = ask(client, max_tokens=40, stop=["zzzz-not-there", stop])
    assert r.choices[0].message.content == full[: full.index(stop)]


def test_stop_sequences_that_straddle_tokens_never_leak(client: openai.OpenAI) -> None:
    tokens = [t.token for t in ask(client, max_tokens=30, logprobs=True).choices[0].logprobs.content]
    k = next(i for i in range(2, len(tokens)) if len(tokens[i - 1]) >= 2 and len(tokens[i]) >= 2)
    stop = tokens[k - 1][-2:] + tokens[k][:2]  # half in one token, half in the next
    full = "".join(tokens)
    r = ask(client, max_tokens=30, stop=stop, logprobs=True)
    content = r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert stop not in content
    assert content == full[: full.index(stop)]
    kept = "".join(t.token for t in r.choices[0].logprobs.content)
    assert content.startswith(kept)  # logprobs of tokens inside the stop sequence are not sent


def test_every_role_and_array_content_is_accepted(client: openai.OpenAI) -> None:
    as_parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Tell me a long story "},
                {"type": "text", "text": "about a dragon and a castle."},
            ],
        }
    ]
    assert text(client, messages=as_parts) == text(client)
    developer = [{"role": "developer", "content": "You are a helpful assistant."}, QUESTION[1]]
    assert ask(client, messages=developer).usage.prompt_tokens == ask(client, messages=QUESTION).usage.prompt_tokens
    conversation = [
        *QUESTION,
        {
            "role": "assistant",
            "content": "Paris.",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
        {"role": "function", "content": "43", "name": "lookup"},
        {"role": "user", "content": "Thanks"},
    ]
    assert ask(client, messages=conversation, max_tokens=3).choices[0].message.content is not None


def test_irrelevant_fields_are_accepted(client: openai.OpenAI) -> None:
    r = ask(
        client,
        max_tokens=2,
        user="u-1",
        metadata={"team": "a"},
        store=False,
        service_tier="auto",
        parallel_tool_calls=True,
        extra_body={"brand_new_field": 1},
    )
    assert r.choices[0].message.content is not None


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"audio": {"voice": "alloy", "format": "mp3"}, "modalities": ["text", "audio"]}, "audio"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"web_search_options": {}}, "web_search_options"),
    ],
)
def test_fields_not_implemented_yet_get_a_clear_400(client: openai.OpenAI, fields: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, **fields)
    body = err.value.body
    assert isinstance(body, dict)
    assert body["param"] == param
    assert body["type"] == "invalid_request_error"
    assert "not supported" in body["message"] or "only allowed" in body["message"]


def test_image_input_is_refused_by_the_text_only_model(client: openai.OpenAI) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
            ],
        }
    ]
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, messages=messages)
    assert err.value.body["param"] == "messages[0].content[1].type"  # type: ignore[index]
    assert "image" in err.value.body["message"]  # type: ignore[index]


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        ask(client, model="gpt-nonexistent")
    assert err.value.code == "model_not_found"
    assert "gpt-nonexistent" in err.value.message


def test_a_prompt_longer_than_the_context_is_400_context_length_exceeded(client: openai.OpenAI) -> None:
    huge = [{"role": "user", "content": "dragon " * 3000}]
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, messages=huge)
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, messages=[{"role": "user", "content": "dragon " * 1000}], max_tokens=1500)
    assert err.value.code == "context_length_exceeded"
    assert ask(client, max_tokens=2).choices  # and the server keeps serving
