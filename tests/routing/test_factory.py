"""upstream_backend: each provider's backend, base URL and key, from the registry unless the config
says otherwise (nothing is sent: building a backend makes no request)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from chatgate.backends.anthropic import AnthropicBackend
from chatgate.backends.base import Backend
from chatgate.backends.gemini import GeminiBackend
from chatgate.backends.openai_compat import OpenAICompatBackend
from chatgate.config import ConfigError, DeploymentConfig, Settings, load_settings
from chatgate.routing.factory import UpstreamClients, upstream_backend

ENV = {"OPENAI_API_KEY": "sk-env-openai", "GROQ_API_KEY": "gsk-env", "MINE_KEY": "sk-mine", "GEMINI_API_KEY": "g"}


@pytest.fixture(scope="module")
def clients() -> Iterator[UpstreamClients]:
    made = UpstreamClients.create()
    yield made
    asyncio.run(made.aclose())


def settings(**providers: Any) -> Settings:
    base = load_settings(env={})
    return Settings.model_validate({**base.model_dump(), "providers": providers})


def build(provider: str, clients: UpstreamClients, s: Settings, **deployment: Any) -> Backend:
    d = DeploymentConfig(provider=provider, model="m", **deployment) if deployment else None
    return upstream_backend(provider, "m", s, clients, ENV, deployment=d)


BUILT = [
    # provider, its config, backend class, base URL, key
    ("openai", {}, OpenAICompatBackend, "https://api.openai.com/v1", "sk-env-openai"),
    ("anthropic", {"api_key": "sk-ant-config"}, AnthropicBackend, "https://api.anthropic.com", "sk-ant-config"),
    ("google", {}, GeminiBackend, "https://generativelanguage.googleapis.com", "g"),
    ("mine", {"base_url": "https://llm.example/v1", "api_key_env": "MINE_KEY"}, OpenAICompatBackend,
     "https://llm.example/v1", "sk-mine"),
    ("mine", {"kind": "anthropic"}, AnthropicBackend, "https://api.anthropic.com", None),
    ("groq", {"base_url": "http://127.0.0.1:9/v1"}, OpenAICompatBackend, "http://127.0.0.1:9/v1", "gsk-env"),
]  # fmt: skip


@pytest.mark.parametrize(("provider", "config", "kind", "base_url", "key"), BUILT)
def test_each_provider_gets_its_backend_base_url_and_key(
    clients: UpstreamClients, provider: str, config: dict[str, Any], kind: type, base_url: str, key: str | None
) -> None:
    backend = build(provider, clients, settings(**{provider: config}))
    assert isinstance(backend, kind)
    assert backend.config.base_url == base_url and backend.config.api_key == key  # type: ignore[attr-defined]


def test_a_deployment_overrides_the_provider(clients: UpstreamClients) -> None:
    backend = build("openai", clients, settings(openai={}), base_url="http://127.0.0.1:9/v1", api_key_env="MINE_KEY")
    assert backend.config.base_url == "http://127.0.0.1:9/v1" and backend.config.api_key == "sk-mine"  # type: ignore[attr-defined]


def test_an_unknown_provider_without_a_base_url_is_a_config_error(clients: UpstreamClients) -> None:
    with pytest.raises(ConfigError, match="'mine' needs a base_url"):
        build("mine", clients, settings(mine={}))
