"""Routing to upstream providers through the server, with the official SDK: pass-through,
retries honouring retry-after, fallbacks in order, cooldown, balancing, timeouts, failures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.openai_upstream import Behaviour
from tests.routing.conftest import Upstreams
from tests.serving import ServerThread

ASK: list[Any] = [{"role": "user", "content": "Hi"}]


def create(client: openai.OpenAI, model: str, **kwargs: Any) -> Any:
    return client.chat.completions.with_raw_response.create(model=model, messages=ASK, **kwargs)


def test_a_configured_upstream_model_passes_through(gw: openai.OpenAI, up: Upstreams) -> None:
    raw = create(gw, "primary", temperature=0.3, max_tokens=20, user="u1")
    r = raw.parse()
    assert r.choices[0].message.content == "Hello from a."
    assert r.model == "primary"
    assert r.usage.total_tokens == 18
    assert raw.headers["x-chatgate-attempts"] == "1"
    sent = up.a.requests[0]
    assert sent["model"] == "up-a" and sent["temperature"] == 0.3 and sent["max_tokens"] == 20
    assert "fallback_models" not in sent and "retries" not in sent
    assert up.a.headers[0]["authorization"] == "Bearer sk-fakeai-secret"  # from FAKEAI_KEY, not the client's key


def test_streams_pass_through(gw: openai.OpenAI, up: Upstreams) -> None:
    chunks = list(gw.chat.completions.create(model="primary", messages=ASK, stream=True,
                                             stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from a."
    assert all(c.model == "primary" for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 18


def test_provider_slash_model_routes_directly_to_a_configured_provider(gw: openai.OpenAI, up: Upstreams) -> None:
    r = create(gw, "otherai/any-model").parse()
    assert r.model == "otherai/any-model" and r.choices[0].message.content == "Hello from b."
    assert up.b.requests[0]["model"] == "any-model"
    assert up.b.headers[0]["authorization"] == "Bearer sk-other-secret"
    with pytest.raises(openai.NotFoundError):
        create(gw, "unconfigured/model")


def test_429_is_retried_after_the_time_the_provider_asks(gw: openai.OpenAI, up: Upstreams) -> None:
    up.a.then(Behaviour(status=429, retry_after_ms="300"))
    start = time.monotonic()
    raw = create(gw, "primary")
    assert time.monotonic() - start >= 0.3
    assert raw.parse().choices[0].message.content == "Hello from a."
    assert raw.headers["x-chatgate-attempts"] == "2"
    assert len(up.a.requests) == 2


@pytest.mark.parametrize("failure", [Behaviour(status=500), Behaviour(status=503), Behaviour(reset=True),
                                     Behaviour(malformed=True), Behaviour(status=408)])  # fmt: skip
def test_retryable_failures_are_retried(gw: openai.OpenAI, up: Upstreams, failure: Behaviour) -> None:
    up.a.then(failure)
    raw = create(gw, "primary")
    assert raw.parse().choices[0].message.content == "Hello from a."
    assert raw.headers["x-chatgate-attempts"] == "2"


def test_client_errors_are_not_retried(gw: openai.OpenAI, up: Upstreams) -> None:
    up.a.then(Behaviour(status=400))
    with pytest.raises(openai.BadRequestError) as err:
        create(gw, "primary")
    assert len(up.a.requests) == 1 and not up.b.requests
    assert err.value.response.headers["x-chatgate-attempts"] == "1"


def test_upstream_auth_errors_are_final_and_do_not_blame_the_client(gw: openai.OpenAI, up: Upstreams) -> None:
    up.a.then(Behaviour(status=401))
    with pytest.raises(openai.APIStatusError) as err:
        create(gw, "primary")
    assert err.value.status_code == 502
    body = err.value.body
    assert isinstance(body, dict) and body["type"] == "upstream_auth_error"
    assert "sk-fakeai-secret" not in json.dumps(body)
    assert len(up.a.requests) == 1


def test_exhausted_retries_fall_back_in_order(gw: openai.OpenAI, up: Upstreams) -> None:
    up.a.then(*[Behaviour(status=503)] * 3)
    raw = create(gw, "primary")
    r = raw.parse()
    assert r.model == "secondary" and r.choices[0].message.content == "Hello from b."
    assert raw.headers["x-chatgate-attempts"] == "4"
    assert len(up.a.requests) == 3 and len(up.b.requests) == 1


def test_request_fallback_models_and_retries(gw: openai.OpenAI, up: Upstreams) -> None:
    up.c.then(Behaviour(status=500))
    raw = create(gw, "third", extra_body={"retries": 0, "fallback_models": ["otherai/b-model", "primary"]})
    r = raw.parse()
    assert r.model == "otherai/b-model"
    assert len(up.c.requests) == 1 and up.b.requests[0]["model"] == "b-model"


def test_a_context_window_error_falls_back_without_retrying(gw: openai.OpenAI, up: Upstreams) -> None:
    up.a.then(Behaviour(status=400, error_code="context_length_exceeded"))
    r = create(gw, "primary").parse()
    assert r.model == "secondary" and len(up.a.requests) == 1


def test_a_failing_deployment_cools_down(gw: openai.OpenAI, up: Upstreams) -> None:
    up.a.then(*[Behaviour(status=500)] * 50)
    for _ in range(200):  # until a has failed allowed_fails (2) times; b answers the others
        if len(up.a.requests) >= 2:
            break
        with contextlib.suppress(openai.InternalServerError):
            create(gw, "pair")
    assert len(up.a.requests) == 2
    answers = [create(gw, "pair").parse().choices[0].message.content for _ in range(10)]
    assert answers == ["Hello from b."] * 10  # a cools down: every request goes to b
    assert len(up.a.requests) == 2


def test_weighted_balancing_spreads_requests(gw: openai.OpenAI, up: Upstreams) -> None:
    for _ in range(30):
        create(gw, "spread")
    assert len(up.a.requests) >= 3 and len(up.b.requests) >= 3  # 1:1 weights; P(fail) < 1e-5


def test_least_busy_balancing_sends_concurrent_requests_to_the_idle_deployment(
    gateway: ServerThread, up: Upstreams
) -> None:
    up.a.then(*[Behaviour(delay=0.5)] * 4)
    up.b.then(*[Behaviour(delay=0.5)] * 4)

    async def burst() -> None:
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http:
            body = {"model": "busy", "messages": ASK}
            await asyncio.gather(*(http.post("/v1/chat/completions", json=body) for _ in range(4)))

    asyncio.run(burst())
    assert (len(up.a.requests), len(up.b.requests)) == (2, 2)


def test_a_slow_upstream_times_out_and_is_retried(gw: openai.OpenAI, up: Upstreams) -> None:
    up.a.then(Behaviour(delay=3))
    raw = create(gw, "primary", extra_body={"timeout": 0.5})
    assert raw.parse().choices[0].message.content == "Hello from a."
    assert raw.headers["x-chatgate-attempts"] == "2"


def test_a_stream_cut_midway_is_not_restarted(gateway: ServerThread, up: Upstreams) -> None:
    up.a.then(Behaviour(cut_after=2))
    body = {"model": "primary", "messages": ASK, "stream": True}
    with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
        raw = http.post("/v1/chat/completions", json=body).content
    events = [e for e in raw.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert '"error"' in events[-2]
    assert len(up.a.requests) == 1 and not up.b.requests


ECHOES = [
    # what the upstream does (echoing the key it was sent), streamed, the status the client gets
    pytest.param(Behaviour(status=400, echo_key=True), False, 400, id="error-answer"),
    pytest.param(Behaviour(status=400, echo_key=True), True, 400, id="streamed-error-answer"),
    pytest.param(Behaviour(status=503, echo_key=True), True, 503, id="streamed-5xx-answer"),
    pytest.param(Behaviour(error_after=0, echo_key=True), True, 502, id="error-event-first"),
    pytest.param(Behaviour(error_after=2, echo_key=True), True, 200, id="error-event-mid-stream"),
]


@pytest.mark.parametrize(("behaviour", "streamed", "status"), ECHOES)
def test_a_key_the_upstream_echoes_never_reaches_the_client(
    gateway: ServerThread, up: Upstreams, behaviour: Behaviour, streamed: bool, status: int
) -> None:
    up.b.then(behaviour)  # "secondary": otherai's key, no retries, no fallbacks
    body = {"model": "secondary", "messages": ASK, "stream": streamed}
    with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == status and len(up.b.requests) == 1
    assert up.b.headers[0]["authorization"] == "Bearer sk-other-secret"
    assert b"sk-other-secret" not in response.content and b"(key: [redacted])" in response.content


def test_a_stream_failing_before_its_first_chunk_falls_back(gw: openai.OpenAI, up: Upstreams) -> None:
    up.a.then(*[Behaviour(status=503)] * 3)
    chunks = list(gw.chat.completions.create(model="primary", messages=ASK, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from b."
    assert {c.model for c in chunks} == {"secondary"}


def test_a_client_disconnect_cancels_the_upstream_request(gateway: ServerThread, up: Upstreams) -> None:
    up.a.then(Behaviour(delay=5))
    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=gateway.base_url, timeout=0.5) as http:
        http.post("/v1/chat/completions", json={"model": "primary", "messages": ASK})
    for _ in range(200):
        if up.a.cancelled:
            break
        time.sleep(0.02)
    assert up.a.cancelled == 1


def test_upstream_models_are_listed(gw: openai.OpenAI, up: Upstreams) -> None:
    ids = {m.id for m in gw.models.list()}
    assert {"primary", "secondary", "pair", "smollm2-135m-instruct", "gpt-4"} <= ids


def test_a_local_model_can_be_a_deployment(gw: openai.OpenAI, up: Upstreams) -> None:
    r = create(gw, "local-backed", max_tokens=3).parse()
    assert r.model == "local-backed" and r.usage.completion_tokens <= 3


def test_images_pass_to_upstreams_and_a_model_without_vision_refuses_them(gw: openai.OpenAI, up: Upstreams) -> None:
    picture = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA==", "detail": "low"}}
    image: Any = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, picture]}]
    gw.chat.completions.create(model="secondary", messages=image)
    assert up.b.requests[0]["messages"][0]["content"][1]["image_url"] == {"url": "data:image/png;base64,AA==",
                                                                         "detail": "low"}  # fmt: skip
    with pytest.raises(openai.BadRequestError) as err:
        gw.chat.completions.create(model="blind", messages=image)
    assert "image" in err.value.message


def test_a_deployment_at_its_rpm_capacity_is_skipped_for_the_fallback(gw: openai.OpenAI, up: Upstreams) -> None:
    assert create(gw, "capped").parse().model == "capped"
    second = create(gw, "capped").parse()
    assert second.model == "secondary"  # rpm: 1 used up for the next minute
    assert len(up.a.requests) == 1 and len(up.b.requests) == 1
