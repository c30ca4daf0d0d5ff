"""The Router's guards, through a real server with fake upstreams: a key's model limit holds over every
fallback (the request's ``fallback_models`` and the configured ones), and ``provider/model`` routes are
kept in a bounded cache that an unknown provider never enters."""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from chatgate.config import DeploymentConfig, Settings, UpstreamModelConfig
from chatgate.errors import ModelNotFoundError
from chatgate.exchange import Exchange, Grant
from chatgate.protocol import ChatCompletionRequest
from chatgate.routing.factory import UpstreamClients, build_router
from tests.fakes.openai_upstream import Behaviour
from tests.gateway.helpers import MASTER, sdk, sdk_with_new_key
from tests.routing.conftest import Upstreams, routing_settings
from tests.serving import ServerThread, serve

ASK: list[Any] = [{"role": "user", "content": "Hi"}]
LOCAL = "smollm2-135m-instruct"
ROUTES = 4


def guarded_settings(up: Upstreams) -> Settings:
    a, b, c = (s.url for s in up.servers)
    settings = routing_settings(a, b, c)
    cheap = UpstreamModelConfig(name="cheap-upstream", retries=0,
                                deployments=[DeploymentConfig(provider="otherai", model="cheap")])  # fmt: skip
    return settings.model_copy(update={
        "master_key": MASTER, "data_dir": tempfile.mkdtemp(prefix="chatgate-test-"), "threads": 1,
        "direct_routes": ROUTES, "upstream_models": [*settings.upstream_models, cheap],
    })  # fmt: skip


@pytest.fixture(scope="module")
def guarded(upstreams: Upstreams) -> Iterator[ServerThread]:
    with serve(guarded_settings(upstreams)) as server:
        yield server


def key_for(server: ServerThread, *models: str) -> openai.OpenAI:
    return sdk_with_new_key(server, "limited", allowed_models=list(models))


def test_a_forbidden_fallback_model_is_a_404_naming_it_before_any_attempt(guarded: ServerThread, up: Upstreams) -> None:
    # the repro: a key allowed only cheap-upstream, the local model as a fallback, the upstream failing
    limited = key_for(guarded, "cheap-upstream")
    for stream in (False, True):
        up.b.then(Behaviour(status=500))
        with pytest.raises(openai.NotFoundError) as refused:
            limited.chat.completions.create(model="cheap-upstream", messages=ASK, max_tokens=4, stream=stream,
                                            extra_body={"fallback_models": [LOCAL]})  # fmt: skip
        assert refused.value.code == "model_not_found" and f"`{LOCAL}`" in refused.value.message
        assert up.b.requests == []  # refused up front: the allowed model was not even tried
        up.reset()
    # the same request from a key allowed both really falls back to the local model
    both = key_for(guarded, "cheap-upstream", LOCAL)
    up.b.then(Behaviour(status=500))
    answer = both.chat.completions.create(model="cheap-upstream", messages=ASK, max_tokens=4,
                                          extra_body={"fallback_models": [LOCAL]})  # fmt: skip
    assert answer.model == LOCAL and len(up.b.requests) == 1


def test_a_forbidden_configured_fallback_is_left_out_of_the_chain(guarded: ServerThread, up: Upstreams) -> None:
    # "primary" falls back to "secondary" in the config; a key allowed only "primary" never reaches it
    limited = key_for(guarded, "primary")
    up.a.then(*[Behaviour(status=500)] * 3)  # every retry of primary fails
    with pytest.raises(openai.InternalServerError) as failed:
        limited.chat.completions.create(model="primary", messages=ASK)
    assert failed.value.status_code >= 500 and failed.value.body is not None
    assert len(up.a.requests) == 3 and up.b.requests == []
    up.reset()
    both = key_for(guarded, "primary", "secondary")
    up.a.then(*[Behaviour(status=500)] * 3)
    assert both.chat.completions.create(model="primary", messages=ASK).choices[0].message.content == "Hello from b."
    # a key allowed only the fallback still cannot ask for the model that has it
    with pytest.raises(openai.NotFoundError):
        key_for(guarded, "secondary").chat.completions.create(model="primary", messages=ASK)


def cached_routes(server: ServerThread) -> int:
    metrics = httpx.get(f"{server.base_url}/metrics").text
    found = re.search(r"^chatgate_direct_routes_cached (\d+)$", metrics, re.MULTILINE)
    assert found is not None, metrics
    return int(found.group(1))


def test_direct_routes_stay_within_their_cache_and_unknown_providers_never_enter_it(
    guarded: ServerThread, up: Upstreams
) -> None:
    client = sdk(guarded, MASTER)
    for i in range(3 * ROUTES):
        assert client.chat.completions.create(model=f"otherai/m{i}", messages=ASK).model == f"otherai/m{i}"
        assert cached_routes(guarded) == min(i + 1, ROUTES)
    for i in range(20):
        with pytest.raises(openai.NotFoundError) as unknown:
            client.chat.completions.create(model=f"nowhere{i}/m", messages=ASK)
        assert unknown.value.code == "model_not_found"
    assert cached_routes(guarded) == ROUTES
    # an evicted route is rebuilt on demand, on the shared pooled client
    assert client.chat.completions.create(model="otherai/m0", messages=ASK).choices[0].message.content
    assert [r["model"] for r in up.b.requests].count("m0") == 2


def test_twenty_thousand_names_keep_the_cache_at_its_size(upstreams: Upstreams) -> None:
    settings = guarded_settings(upstreams).model_copy(update={"models": [], "upstream_models": []})
    clients = UpstreamClients.create()
    router = build_router(settings, [], clients)
    asyncio.run(clients.aclose())  # building routes never sends anything
    for i in range(20_000):
        router.resolve(f"otherai/model-{i}")
        with pytest.raises(ModelNotFoundError):
            router.resolve(f"unknown-{i}/model")
    assert router.direct_routes_cached == ROUTES
    recent = router.resolve("otherai/model-19999")
    assert router.resolve("otherai/model-19999") is recent  # the most recent ones are kept
    ctx = Exchange("t", grant=Grant("key_t", models=frozenset({"otherai/model-1"})))
    req = ChatCompletionRequest.model_validate({"model": "otherai/model-2", "messages": ASK})
    with pytest.raises(ModelNotFoundError):
        router.deployments(req, ctx)
