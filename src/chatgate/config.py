"""Settings: built-in defaults, then a YAML file, then ``CHATGATE_*`` environment variables, then
command-line flags, each overriding the one before."""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "CHATGATE_"


class ConfigError(Exception):
    """The configuration is unusable; the message says what to fix."""


class LocalModelConfig(BaseModel):
    """A GGUF model served by the local llama.cpp engine."""

    model_config = ConfigDict(extra="forbid")

    id: str
    path: str | None = None
    """Path to a .gguf file; ``None`` means the embedded SmolLM2-135M-Instruct."""
    n_ctx: int | None = Field(default=None, ge=64)
    chat_template: str | None = None
    """``None``: the GGUF's own template; ``"chatml"``: the built-in ChatML; else a Jinja source."""

    @field_validator("id")
    @classmethod
    def _id_is_clean(cls, value: str) -> str:
        if not value or value.strip() != value or "/" in value:
            raise ValueError("a model id is a non-empty name without '/' or surrounding spaces")
        return value


class Settings(BaseModel):
    """Everything ``create_app`` and ``chatgate serve`` need."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    data_dir: str = "data"
    log_level: str = "info"
    threads: int | None = Field(default=None, ge=1)
    """CPU threads for the local engine; ``None`` = every core."""
    max_waiting: int = Field(default=256, ge=1)
    """Requests that may wait for the local engine before new ones get a 503."""
    models: list[LocalModelConfig] = Field(default_factory=list)
    aliases: dict[str, str] = Field(default_factory=dict)

    def model_ids(self) -> list[str]:
        return [m.id for m in self.models]


_ENV_FIELDS = ("host", "port", "data_dir", "log_level", "threads", "max_waiting")


def builtin_defaults() -> dict[str, Any]:
    text = resources.files("chatgate").joinpath("default_config.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)  # our own packaged file
    return data


def load_settings(
    config_file: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    model_path: str | None = None,
) -> Settings:
    """Build the settings from every source, in order of precedence (last wins)."""
    env = os.environ if env is None else env
    data = builtin_defaults()
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG")
    if config_file:
        data.update(_read_file(Path(config_file)))
    for name in _ENV_FIELDS:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            data[name] = value
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    model_path = model_path or env.get(ENV_PREFIX + "MODEL") or None
    if model_path:
        _serve_only(data, model_path)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    _check_aliases(settings)
    return settings


def _read_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded


def _serve_only(data: dict[str, Any], model_path: str) -> None:
    """``--model PATH``: serve that GGUF alone; aliases to models no longer served are dropped."""
    path = Path(model_path)
    if not path.is_file():
        raise ConfigError(f"model file not found: {model_path}")
    model_id = path.stem.lower().replace("/", "-")
    data["models"] = [{"id": model_id, "path": str(path)}]
    aliases = data.get("aliases") or {}
    data["aliases"] = {name: model_id for name in aliases}


def _check_aliases(settings: Settings) -> None:
    served = set(settings.model_ids())
    if len(served) != len(settings.models):
        raise ConfigError("two models in the config share one id")
    for alias, target in settings.aliases.items():
        if target not in served:
            raise ConfigError(f"alias {alias!r} points at {target!r}, which is not a configured model")
        if alias in served:
            raise ConfigError(f"alias {alias!r} has the same name as a configured model")
