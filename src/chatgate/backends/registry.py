"""The provider registry: every provider chatgate knows by name, and the backend of each wire format.

:data:`PROVIDERS` is the one place that says, per provider name, which wire format it speaks (its
kind), its default base URL, the environment variable its API key is read from, and the request
fields its API refuses. :data:`BACKENDS` says which backend speaks each kind. A name not listed is
an OpenAI-compatible server at its configured ``base_url``; a provider configured with another
``kind`` than its name's gets that kind's defaults (its key variable stays its name's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from chatgate.backends.anthropic import AnthropicBackend
from chatgate.backends.base import Backend
from chatgate.backends.gemini import GeminiBackend
from chatgate.backends.openai_compat import OpenAICompatBackend
from chatgate.backends.upstream import UpstreamClients, UpstreamConfig
from chatgate.config import ProviderKind


@dataclass(frozen=True)
class ProviderSpec:
    """What chatgate knows of one provider without being told."""

    kind: ProviderKind
    base_url: str | None = None
    """``None``: the configuration must give one."""
    key_env: str | None = None
    """The environment variable holding its API key, unless the configuration names another."""
    rejected: frozenset[str] = frozenset()
    """OpenAI request fields this provider answers with a 400: dropped rather than forwarded."""
    extensions: bool = False
    """It takes chatgate's sampling extensions (``top_k``, ``min_p``, ``repetition_penalty``): a
    server such as vLLM, llama.cpp or Ollama."""


_OPENAI: Final = "openai_compatible"
_UNSTORED = frozenset({"store", "metadata", "service_tier"})
_LOGPROBS = frozenset({"logit_bias", "logprobs", "top_logprobs"})
_GEMINI = ProviderSpec("gemini", "https://generativelanguage.googleapis.com", "GEMINI_API_KEY")

PROVIDERS: Mapping[str, ProviderSpec] = MappingProxyType({
    "openai": ProviderSpec(_OPENAI, "https://api.openai.com/v1", "OPENAI_API_KEY"),
    "anthropic": ProviderSpec("anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
    "gemini": _GEMINI,
    "google": _GEMINI,
    "groq": ProviderSpec(_OPENAI, "https://api.groq.com/openai/v1", "GROQ_API_KEY", _LOGPROBS | _UNSTORED | {"n"}),
    "mistral": ProviderSpec(_OPENAI, "https://api.mistral.ai/v1", "MISTRAL_API_KEY", _LOGPROBS | _UNSTORED | {"user"}),
    "together": ProviderSpec(_OPENAI, "https://api.together.xyz/v1", "TOGETHER_API_KEY"),
    "deepseek": ProviderSpec(_OPENAI, "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", _UNSTORED | {"logit_bias"}),
    "openrouter": ProviderSpec(_OPENAI, "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "ollama": ProviderSpec(_OPENAI, "http://127.0.0.1:11434/v1", extensions=True),
    "vllm": ProviderSpec(_OPENAI, "http://127.0.0.1:8000/v1", extensions=True),
    "llamacpp": ProviderSpec(_OPENAI, "http://127.0.0.1:8080/v1", extensions=True),
    "openai_compatible": ProviderSpec(_OPENAI, extensions=True),
})  # fmt: skip
"""Every provider known by name; each kind's own name is listed too, with that kind's defaults."""

BackendFactory = Callable[[UpstreamConfig, UpstreamClients, ProviderSpec], Backend]
BACKENDS: Mapping[ProviderKind, BackendFactory] = MappingProxyType({
    "openai_compatible": lambda config, clients, spec: OpenAICompatBackend(
        config, clients.aio, rejected=spec.rejected, extensions=spec.extensions),
    "anthropic": lambda config, clients, spec: AnthropicBackend(config, clients.httpx),
    "gemini": lambda config, clients, spec: GeminiBackend(config, clients.httpx),
})  # fmt: skip
"""The backend of each wire format, built from a deployment's config and the shared HTTP clients."""


def provider_spec(provider: str, kind: ProviderKind | None = None) -> ProviderSpec:
    """What is known of ``provider``, speaking ``kind`` (``None``: its own, OpenAI's if unknown)."""
    known = PROVIDERS.get(provider)
    if known is not None and kind in (None, known.kind):
        return known
    defaults = PROVIDERS[kind or _OPENAI]
    return ProviderSpec(kind=defaults.kind, base_url=defaults.base_url, key_env=known.key_env if known else None)


def create_backend(config: UpstreamConfig, spec: ProviderSpec, clients: UpstreamClients) -> Backend:
    """The backend that speaks ``spec``'s wire format for the deployment ``config``."""
    return BACKENDS[spec.kind](config, clients, spec)
