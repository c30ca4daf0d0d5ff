"""The provider registry: one table of provider defaults, a backend for every kind, and the README's
table of providers saying exactly what the registry says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from chatgate.backends.registry import BACKENDS, PROVIDERS, ProviderSpec, provider_spec
from chatgate.config import ProviderConfig, ProviderKind

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_kind_has_a_backend_and_its_own_entry() -> None:
    kinds = set(get_args(ProviderKind))
    assert set(BACKENDS) == kinds
    assert {spec.kind for spec in PROVIDERS.values()} == kinds
    assert all(PROVIDERS[kind].kind == kind for kind in kinds)  # each kind's name holds its defaults
    assert ProviderConfig.model_validate({"kind": "gemini"}).kind == "gemini"


RESOLVED = [
    # name, configured kind, (kind, base_url, key variable)
    ("openai", None, ("openai_compatible", "https://api.openai.com/v1", "OPENAI_API_KEY")),
    ("google", "gemini", ("gemini", "https://generativelanguage.googleapis.com", "GEMINI_API_KEY")),
    ("mine", None, ("openai_compatible", None, None)),
    ("mine", "anthropic", ("anthropic", "https://api.anthropic.com", None)),
    ("groq", "anthropic", ("anthropic", "https://api.anthropic.com", "GROQ_API_KEY")),
    ("anthropic", "openai_compatible", ("openai_compatible", None, "ANTHROPIC_API_KEY")),
]


@pytest.mark.parametrize(("name", "kind", "expected"), RESOLVED)
def test_a_provider_resolves_by_name_then_by_kind(
    name: str, kind: ProviderKind | None, expected: tuple[str, str | None, str | None]
) -> None:
    spec = provider_spec(name, kind)
    assert (spec.kind, spec.base_url, spec.key_env) == expected


def test_only_local_servers_take_the_extensions_and_only_known_names_drop_fields() -> None:
    assert [n for n, s in PROVIDERS.items() if s.extensions] == ["ollama", "vllm", "llamacpp", "openai_compatible"]
    assert not provider_spec("mine").extensions and provider_spec("mine").rejected == frozenset()
    assert "n" in provider_spec("groq").rejected and not provider_spec("groq", "anthropic").rejected


def _cell(text: str) -> str | None:
    return None if text == "none" else text.strip("`")


def test_the_readme_lists_the_providers_exactly() -> None:
    section = README.read_text().split("### Providers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| `", line)]
    table: dict[str, ProviderSpec] = {}
    for row in rows:
        name, kind, base, key, dropped, extensions = (c.strip() for c in row.strip("|").split("|"))
        rejected = frozenset() if dropped == "none" else frozenset(f.strip(" `") for f in dropped.split(","))
        table[name.strip("`")] = ProviderSpec(kind.strip("`"), _cell(base), _cell(key), rejected,  # type: ignore[arg-type]
                                              extensions == "yes")  # fmt: skip
    assert table == dict(PROVIDERS)
