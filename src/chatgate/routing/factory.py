"""Build the Router from the settings: local models, upstream models and direct provider routes."""

from __future__ import annotations

import os
from collections.abc import Mapping

from chatgate.backends.base import Backend
from chatgate.backends.local.backend import LocalBackend
from chatgate.backends.registry import ProviderSpec, create_backend, provider_spec
from chatgate.backends.upstream import UpstreamClients, UpstreamConfig
from chatgate.config import ConfigError, DeploymentConfig, ProviderConfig, Settings, UpstreamModelConfig
from chatgate.pricing import Price
from chatgate.routing.group import Deployment, ModelGroup
from chatgate.routing.router import Router

__all__ = ["UpstreamClients", "build_router", "upstream_backend"]


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
    """The backend for ``provider``'s ``model``: its wire format, base URL and key variable from the
    provider registry unless the config says otherwise; credentials from the config or the environment."""
    pcfg = settings.providers.get(provider, ProviderConfig())
    spec = provider_spec(provider, pcfg.kind)
    config = UpstreamConfig(
        provider=provider,
        model=model,
        base_url=_base_url(provider, spec, pcfg, deployment),
        api_key=_key(spec, pcfg, deployment, env),
        timeout=(deployment.timeout if deployment and deployment.timeout else None) or pcfg.timeout,
    )
    return create_backend(config, spec, clients)


def _base_url(provider: str, spec: ProviderSpec, pcfg: ProviderConfig, deployment: DeploymentConfig | None) -> str:
    base_url = (deployment.base_url if deployment else None) or pcfg.base_url or spec.base_url
    if not base_url:
        raise ConfigError(f"provider {provider!r} needs a base_url")
    return base_url


def _key(
    spec: ProviderSpec, pcfg: ProviderConfig, deployment: DeploymentConfig | None, env: Mapping[str, str]
) -> str | None:
    if deployment is not None:
        if deployment.api_key:
            return deployment.api_key
        if deployment.api_key_env:
            return env.get(deployment.api_key_env)
    if pcfg.api_key:
        return pcfg.api_key
    name = pcfg.api_key_env or spec.key_env
    return env.get(name) if name else None
