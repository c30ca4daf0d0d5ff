"""A chatgate server whose models are fake OpenAI-compatible upstreams on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest

from chatgate.config import Settings, load_settings
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import FakeServer
from tests.serving import ServerThread, all_running, serve

FAKEAI_KEY = "sk-fakeai-secret"
"""What the ``fakeai`` provider's key variable, FAKEAI_KEY, holds while a server of these settings runs."""


@dataclass
class Upstreams:
    a: FakeOpenAI
    b: FakeOpenAI
    c: FakeOpenAI
    servers: list[FakeServer]

    def reset(self) -> None:
        for fake in (self.a, self.b, self.c):
            fake.queue.clear()
            fake.requests.clear()
            fake.headers.clear()
            fake.cancelled = 0


def routing_settings(a: str, b: str, c: str) -> Settings:
    base = load_settings(env={})
    data = {
        "retry_backoff_seconds": 0.01,
        "providers": {
            "fakeai": {"base_url": f"{a}/v1", "api_key_env": "FAKEAI_KEY"},
            "otherai": {"base_url": f"{b}/v1", "api_key": "sk-other-secret"},
        },
        "upstream_models": [
            {"name": "primary", "deployments": [{"provider": "fakeai", "model": "up-a"}], "retries": 2,
             "fallbacks": ["secondary"]},
            {"name": "secondary", "deployments": [{"provider": "otherai", "model": "up-b"}], "retries": 0},
            {"name": "capped", "fallbacks": ["secondary"],
             "deployments": [{"provider": "fakeai", "model": "up-a", "rpm": 1}]},
            {"name": "blind", "vision": False, "deployments": [{"provider": "otherai", "model": "up-b"}]},
            {"name": "pair", "deployments": [{"provider": "fakeai", "model": "up-a"},
                                             {"provider": "otherai", "model": "up-b"}],
             "retries": 0, "allowed_fails": 2, "cooldown_seconds": 60},
            {"name": "spread", "deployments": [{"provider": "fakeai", "model": "up-a", "weight": 1},
                                               {"provider": "otherai", "model": "up-b", "weight": 1}]},
            {"name": "busy", "balancing": "least_busy", "deployments": [
                {"provider": "fakeai", "model": "up-a"}, {"provider": "otherai", "model": "up-b"}]},
            {"name": "third", "deployments": [{"provider": "fakeai", "model": "up-c", "base_url": f"{c}/v1",
                                               "api_key": "sk-third"}], "retries": 1},
            {"name": "local-backed", "deployments": [{"provider": "local", "model": "smollm2-135m-instruct"}]},
        ],
    }  # fmt: skip
    models = [m.model_copy(update={"n_ctx": 1024, "parallel": 2}) for m in base.models]
    return Settings.model_validate({**base.model_dump(), **data, "models": [m.model_dump() for m in models]})


@pytest.fixture(scope="session")
def upstreams() -> Iterator[Upstreams]:
    fakes = [FakeOpenAI(reply=f"Hello from {n}.", name=n) for n in ("a", "b", "c")]
    with all_running(FakeServer(f.app()) for f in fakes) as servers:
        yield Upstreams(fakes[0], fakes[1], fakes[2], servers=servers)


@pytest.fixture(scope="session")
def gateway(upstreams: Upstreams) -> Iterator[ServerThread]:
    a, b, c = (s.url for s in upstreams.servers)
    with pytest.MonkeyPatch.context() as env:  # set before the server builds its routes, restored after it stops
        env.setenv("FAKEAI_KEY", FAKEAI_KEY)
        with serve(routing_settings(a, b, c)) as server:
            yield server


@pytest.fixture
def up(upstreams: Upstreams) -> Upstreams:
    upstreams.reset()
    return upstreams


@pytest.fixture
def gw(gateway: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="client-key", max_retries=0) as c:
        yield c
