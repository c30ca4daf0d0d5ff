"""Build the Router from the settings: local models, upstream models and direct provider routes."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from chatgate.backends.base import Backend
from chatgate.backends.local.backend import LocalBackend
from chatgate.backends.openai_compat import KEY_ENV, PRESETS, OpenAICompatBackend
from chatgate.backends.upstream import AioPool, UpstreamConfig, new_client
from chatgate.config import ConfigError, DeploymentConfig, ProviderConfig, Settings, UpstreamModelConfig
from chatgate.pricing import Price
from chatgate.routing.group import Deployment, ModelGroup
from chatgate.routing.router import Router


@dataclass
class UpstreamClients:
    """The pooled HTTP clients upstream backends share: aiohttp for OpenAI-compatible servers (the
    hot path), httpx for Anthropic and Gemini."""

    httpx: httpx.AsyncClient
    aio: AioPool

    @classmethod
    def create(cls) -> UpstreamClients:
        return cls(httpx=new_client(), aio=AioPool())

    async def aclose(self) -> None:
        await self.httpx.aclose()
        await self.aio.aclose()


DEFAULT_BASE = {"anthropic": "https://api.anthropic.com", "gemini": "https://generativelanguage.googleapis.com"}
DEFAULT_KEY_ENV = {**KEY_ENV, "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY", "google": "GEMINI_API_KEY"}


def build_router(
    settings: Settings, local: list[LocalBackend], clients: UpstreamClients, env: Mapping[str, str] | None = None
) -> Router:
    env = os.environ if env is None else env
    by_id = {b.model_id: b for b in local}
    groups: dict[str, ModelGroup] = {
        b.model_id: ModelGroup(name=b.model_id, deployments=[_local_deployment(b, settings)], retries=0) for b in local
    }
    for model in settings.upstream_models:
        groups[model.name] = _group(model, settings, by_id, clients, env)

    def direct(provider: str, name: str) -> ModelGroup | None:
        if provider not in settings.providers:
            return None
        backend = upstream_backend(provider, name, settings, clients, env)
        priced = settings.pricing.get(f"{provider}/{name}")
        price = Price.per_million(priced.input_price_per_million, priced.output_price_per_million) if priced else None
        deployment = Deployment(backend, f"{provider}/{name}", price=price or Price(),
                                prompt_overhead=settings.prompt_overhead)  # fmt: skip
        return ModelGroup(name=f"{provider}/{name}", deployments=[deployment])

    return Router(groups, settings.aliases, local=set(by_id), direct=direct,
                  backoff_base=settings.retry_backoff_seconds, direct_routes=settings.direct_routes)  # fmt: skip


def _local_deployment(backend: LocalBackend, settings: Settings) -> Deployment:
    cfg = next((m for m in settings.models if m.id == backend.model_id), None)
    price = Price.per_million(cfg.input_price_per_million, cfg.output_price_per_million) if cfg else Price()
    return Deployment(backend, f"local/{backend.model_id}", price=price, max_output_tokens=backend.engine.n_ctx,
                      local=True)  # fmt: skip


def _group(
    model: UpstreamModelConfig,
    settings: Settings,
    local: Mapping[str, LocalBackend],
    clients: UpstreamClients,
    env: Mapping[str, str],
) -> ModelGroup:
    deployments = []
    for d in model.deployments:
        price = Price.per_million(d.input_price_per_million, d.output_price_per_million)
        if d.provider == "local":
            base = _local_deployment(local[d.model], settings)
            deployments.append(Deployment(base.backend, base.label, weight=d.weight, rpm=d.rpm, tpm=d.tpm,
                                          price=price if not price.free else base.price,
                                          max_output_tokens=base.max_output_tokens, local=True))  # fmt: skip
            continue
        backend: Backend = upstream_backend(d.provider, d.model, settings, clients, env, deployment=d)
        deployments.append(Deployment(backend, f"{d.provider}/{d.model}", weight=d.weight, rpm=d.rpm, tpm=d.tpm,
                                      price=price, max_output_tokens=d.max_output_tokens,
                                      prompt_overhead=d.prompt_overhead or settings.prompt_overhead))  # fmt: skip
    return ModelGroup(
        name=model.name,
        deployments=deployments,
        fallbacks=list(model.fallbacks),
        balancing=model.balancing,
        retries=model.retries,
        cooldown_seconds=model.cooldown_seconds,
        allowed_fails=model.allowed_fails,
        vision=model.vision,
    )


def upstream_backend(
    provider: str,
    model: str,
    settings: Settings,
    clients: UpstreamClients,
    env: Mapping[str, str],
    *,
    deployment: DeploymentConfig | None = None,
) -> Backend:
    """The backend for ``provider``'s ``model``, credentials from the config or the environment."""
    pcfg = settings.providers.get(provider, ProviderConfig())
    kind = pcfg.kind or ("anthropic" if provider == "anthropic" else "gemini" if provider in ("gemini", "google")
                         else "openai_compatible")  # fmt: skip
    base_url = (
        (deployment.base_url if deployment else None)
        or pcfg.base_url
        or PRESETS.get(provider)
        or DEFAULT_BASE.get(kind)
    )
    if not base_url:
        raise ConfigError(f"provider {provider!r} needs a base_url")
    config = UpstreamConfig(
        provider=provider,
        model=model,
        base_url=base_url,
        api_key=_key(provider, pcfg, deployment, env),
        timeout=(deployment.timeout if deployment and deployment.timeout else None) or pcfg.timeout,
    )
    if kind == "anthropic":
        from chatgate.backends.anthropic import AnthropicBackend  # noqa: PLC0415

        return AnthropicBackend(config, clients.httpx)
    if kind == "gemini":
        from chatgate.backends.gemini import GeminiBackend  # noqa: PLC0415

        return GeminiBackend(config, clients.httpx)
    return OpenAICompatBackend(config, clients.aio)


def _key(
    provider: str, pcfg: ProviderConfig, deployment: DeploymentConfig | None, env: Mapping[str, str]
) -> str | None:
    if deployment is not None:
        if deployment.api_key:
            return deployment.api_key
        if deployment.api_key_env:
            return env.get(deployment.api_key_env)
    if pcfg.api_key:
        return pcfg.api_key
    name = pcfg.api_key_env or DEFAULT_KEY_ENV.get(provider)
    return env.get(name) if name else None
