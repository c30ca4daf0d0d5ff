"""Settings: built-in defaults, then a YAML file, then ``CHATGATE_*`` environment variables, then
command-line flags, each overriding the one before."""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "CHATGATE_"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
ProviderKind = Literal["openai_compatible", "anthropic", "gemini"]
"""The wire formats chatgate speaks upstream (``chatgate.backends.registry`` has a backend for each)."""


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
    parallel: int = Field(default=8, ge=1, le=256)
    """Sequences decoded together in one batch (continuous batching); they share the n_ctx cells."""
    n_batch: int = Field(default=512, ge=16)
    """Most tokens in one decode step (decode tokens plus prompt chunks)."""
    prefix_cache: bool = True
    """Reuse the KV cells of a prompt's longest cached prefix."""
    kv_unified: bool = False
    """``False``: each of the ``parallel`` sequences owns ``n_ctx`` cells (greedy output independent of
    batching). ``True``: all share one pool of ``n_ctx`` cells (less memory; prefixes shared across
    requests; a full pool makes requests wait)."""
    input_price_per_million: float | None = Field(default=None, ge=0)
    """USD per million prompt tokens, for costs and budgets (unset: free)."""
    output_price_per_million: float | None = Field(default=None, ge=0)
    n_ubatch: int = Field(default=32, ge=1)
    """Tokens per llama.cpp compute step. Above 63, llama.cpp's CPU flash attention switches to a
    tiled kernel whose rounding differs, so a request's output would depend on its batch-mates."""

    @field_validator("id")
    @classmethod
    def _id_is_clean(cls, value: str) -> str:
        if not value or value.strip() != value or "/" in value:
            raise ValueError("a model id is a non-empty name without '/' or surrounding spaces")
        return value


class ProviderConfig(BaseModel):
    """Credentials and endpoint of one upstream provider (``openai``, ``anthropic``, ``gemini``, …)."""

    model_config = ConfigDict(extra="forbid")

    kind: ProviderKind | None = None
    """Wire format; inferred from the provider's name when unset (any unknown name: OpenAI's)."""
    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    """Prefer ``api_key_env``: a key in a config file is a key on disk."""
    api_key_env: str | None = None
    """Environment variable holding the key; defaults to the provider's usual one (OPENAI_API_KEY, …)."""
    timeout: float = Field(default=600.0, gt=0)


class PromptOverheadConfig(BaseModel):
    """Prompt tokens an upstream deployment may charge beyond the request body's bytes, for the budget's
    worst case. A token is at least one byte of the text it encodes, so the body's bytes bound the
    tokens of everything it carries; providers add role markers per message, a hidden preamble when tools
    are offered, and tokens per image that its URL's bytes do not bound. The defaults cover OpenAI's,
    Anthropic's and Gemini's published overheads; raise ``per_attachment`` for a model that bills images
    higher (gpt-4o-mini: up to about 48,200 tokens per image at high detail)."""

    model_config = ConfigDict(extra="forbid")

    per_request: int = Field(default=64, ge=0)
    """Fixed tokens of any request (reply priming, a default system prompt)."""
    per_message: int = Field(default=16, ge=0)
    """Role and separator tokens around each message."""
    tools: int = Field(default=1024, ge=0)
    """Hidden tool-use preamble, once, when ``tools`` or ``functions`` are offered (Anthropic: up to ~530)."""
    per_tool: int = Field(default=64, ge=0)
    """Framing of each offered tool or function."""
    per_attachment: int = Field(default=2000, ge=0)
    """Each image, audio or file content part (OpenAI high detail: up to 1,445; Anthropic: about 1,600)."""


class DeploymentConfig(BaseModel):
    """One place a public model can be served from."""

    model_config = ConfigDict(extra="forbid")

    provider: str
    """A provider name (its settings come from ``providers``), or ``local`` for a local model id."""
    model: str
    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    api_key_env: str | None = None
    weight: float = Field(default=1.0, gt=0)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    input_price_per_million: float | None = Field(default=None, ge=0)
    output_price_per_million: float | None = Field(default=None, ge=0)
    timeout: float | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, ge=1)
    """The most completion tokens this deployment returns; bounds a budget reservation for requests
    without ``max_tokens`` (unset: ``reserve_max_tokens``)."""
    prompt_overhead: PromptOverheadConfig | None = None
    """This deployment's prompt overheads for the budget's worst case (unset: ``prompt_overhead``)."""


class PriceConfig(BaseModel):
    """USD per million tokens of a model reached as ``provider/model`` (no deployment to carry it)."""

    model_config = ConfigDict(extra="forbid")

    input_price_per_million: float = Field(default=0, ge=0)
    output_price_per_million: float = Field(default=0, ge=0)


class CacheConfig(BaseModel):
    """The response cache: exact matches of deterministic requests (temperature 0, or a seed)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    """The default for every key and request; a key's ``cache`` and a request's ``x-chatgate-cache``
    header override it."""
    ttl_seconds: int = Field(default=3600, ge=1)
    max_entries: int = Field(default=1000, ge=1)
    """Entries kept in memory (least recently used go first); with Redis, its own memory policy rules."""
    redis: bool = True
    """Keep entries in Redis when ``redis_url`` is set (shared by replicas); in memory otherwise."""


class UpstreamModelConfig(BaseModel):
    """A public model name served by one or more deployments."""

    model_config = ConfigDict(extra="forbid")

    name: str
    deployments: list[DeploymentConfig] = Field(min_length=1)
    fallbacks: list[str] = Field(default_factory=list)
    balancing: Literal["weighted", "least_busy"] = "weighted"
    retries: int = Field(default=2, ge=0, le=10)
    cooldown_seconds: float = Field(default=30.0, ge=0)
    allowed_fails: int = Field(default=3, ge=1)
    vision: bool = True
    """Whether the deployments accept image input; ``false`` answers image requests with a 400."""


class LimitsConfig(BaseModel):
    """Bounds on what a client may send and hold, checked before any expensive work (README: "Limits
    and hardening"). Every request limit answers OpenAI's error shape; connection limits close cheaply."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Largest request body: a larger ``Content-Length`` is refused at once (413), a chunked body as
    soon as it passes the limit."""
    max_json_depth: int = Field(default=64, ge=2, le=200)
    """Deepest nesting of arrays and objects in a JSON body (checked without recursion, before parsing;
    200 is the most the JSON parser takes)."""
    max_messages: int = Field(default=2048, ge=1)
    """Messages in one chat request."""
    max_message_chars: int = Field(default=1_000_000, ge=1)
    """Characters of text in one message (its content, all parts together)."""
    max_total_chars: int = Field(default=4_000_000, ge=1)
    """Characters of text in all the messages of one request together."""
    max_string_chars: int = Field(default=1_000_000, ge=1)
    """Characters in any other string of a request (a tool's description, a stop sequence, an id…)."""
    max_tools: int = Field(default=128, ge=1)
    """``tools`` (and ``functions``) entries, as OpenAI allows."""
    max_stop: int = Field(default=4, ge=1)
    """``stop`` sequences, as OpenAI allows."""
    max_logit_bias: int = Field(default=300, ge=1)
    """``logit_bias`` entries, as OpenAI allows."""
    max_metadata_pairs: int = Field(default=16, ge=1)
    """``metadata`` pairs on a chat request, a stored completion or a key, as OpenAI allows."""
    max_metadata_key_chars: int = Field(default=64, ge=1)
    max_metadata_value_chars: int = Field(default=512, ge=1)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    """Request line and headers together; beyond it the connection gets a 431 and is closed."""
    max_headers: int = Field(default=100, ge=8)
    """Header lines in one request."""
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    """Time a connection has to send a request's line and headers (from connect, or from its first byte
    after a keep-alive pause); then it gets a 408 and is closed (slowloris)."""
    body_timeout_seconds: float = Field(default=60.0, gt=0)
    """Time a request has to send its whole body once its headers are in; then a 408 and a close."""
    keep_alive_seconds: int = Field(default=5, ge=1)
    """Idle time a keep-alive connection may wait for its next request."""
    max_connections: int = Field(default=1000, ge=1)
    """Open connections; beyond it a new connection is closed at once, and the others keep being served.
    Keep it below the process's file-descriptor limit (``ulimit -n``)."""
    max_concurrency: int | None = Field(default=None, ge=1)
    """Open connections or requests in progress from which a new request gets a 503 (uvicorn's
    ``limit_concurrency``; unset: no cap beyond ``max_connections`` and the engine's ``max_waiting``)."""
    backlog: int = Field(default=2048, ge=1)
    """Connections the kernel queues before the server accepts them."""
    shutdown_timeout_seconds: float = Field(default=30.0, ge=0)
    """On SIGTERM: how long requests in flight (streams included) may go on before they are cancelled
    and the process exits."""


class StructuredOutputConfig(BaseModel):
    """Bounds on JSON schemas and grammars (``response_format``, tool parameters), checked before any
    grammar is built; a schema past one is a 400 ``invalid_json_schema`` naming the keyword."""

    model_config = ConfigDict(extra="forbid")

    max_schema_bytes: int = Field(default=100_000, ge=1)
    """Size of one schema as compact JSON."""
    max_depth: int = Field(default=32, ge=1)
    """Nesting of objects and arrays in a schema's JSON."""
    max_count: int = Field(default=10_000, ge=1)
    """Largest ``maxLength``/``maxItems``/``maxProperties`` (larger is refused, not clamped)."""
    max_min_count: int = Field(default=1_000, ge=0)
    """Largest ``minLength``/``minItems``/``minProperties``: every answer must be at least that long."""
    max_enum: int = Field(default=1_000, ge=1)
    """Values in one ``enum``."""
    max_pattern_length: int = Field(default=1_000, ge=1)
    """Characters in one ``pattern``."""
    max_pattern_repeat: int = Field(default=1_000, ge=1)
    """Largest count in a pattern's ``{n}``/``{n,m}``; nested counted repeats may multiply to at most this."""
    cache_size: int = Field(default=256, ge=1)
    """Compiled grammars kept (LRU by canonical schema)."""
    step_lexer_fuel: int = Field(default=200_000, ge=1_000)
    """llguidance's work budget for one token's mask (lexer, ~14k/ms); past it the choice ends."""
    step_max_items: int = Field(default=50_000, ge=1_000)
    """llguidance's Earley items per token (~20k/ms); past it the choice ends."""
    max_grammar_size: int = Field(default=500_000, ge=1_000)
    """Symbols in one compiled grammar."""
    max_lexer_states: int = Field(default=250_000, ge=1_000)
    """Lexer states one grammar may build (memory: ~1-2 kB each)."""
    initial_lexer_fuel: int = Field(default=1_000_000, ge=1_000)
    """llguidance's budget to build one grammar's lexer."""
    close_search_nodes: int = Field(default=2_000, ge=10)
    """Steps of the search for the shortest document a grammar accepts (at compile time: none found, 400)
    and for the shortest valid ending as ``max_tokens`` nears."""
    close_max_tokens: int = Field(default=512, ge=1)
    """Longest ending searched for (and the longest shortest document a schema may need)."""
    close_margin: int = Field(default=4, ge=0)
    """Tokens of slack: the ending is forced once the tokens left are within its length plus this."""


class Settings(BaseModel):
    """Everything ``create_app`` and ``chatgate serve`` need."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    data_dir: str = "data"
    log_level: str = "info"
    threads: int | None = Field(default=None, ge=1)
    """CPU threads for the local engine; ``None`` = every core. With ``adaptive_threads`` this is the
    width while the CPU is free."""
    adaptive_threads: bool = True
    """Run the local engine on one thread while other processes keep the CPU busy, and on ``threads``
    again once there is room (see :mod:`chatgate.backends.local.threads`); ``false`` always uses
    ``threads``. llama.cpp's threads wait for each other after every operation of a decode step, so
    at full width one descheduled thread stalls them all (steps 20-100x slower on a shared machine)."""
    master_key: str | None = Field(default=None, repr=False)
    """The admin's key (env CHATGATE_MASTER_KEY). Without one, the server is open: allowed only on loopback."""
    database_url: str | None = Field(default=None, repr=False)
    """The gateway's database (env CHATGATE_DATABASE_URL): a PostgreSQL URL, or a SQLite file in data_dir."""
    redis_url: str | None = Field(default=None, repr=False)
    """Redis for rate-limit counters shared by every replica (env CHATGATE_REDIS_URL); in-process otherwise."""
    redis_timeout_seconds: float = Field(default=1.0, gt=0)
    """Longest wait for Redis (connecting or answering) before the rate limiter counts in process and the
    response cache answers without it."""
    retry_backoff_seconds: float = Field(default=0.5, ge=0)
    """First wait of the exponential backoff between upstream retries (doubling, with jitter)."""
    max_waiting: int = Field(default=256, ge=1)
    """Requests that may wait for the local engine before new ones get a 503."""
    models: list[LocalModelConfig] = Field(default_factory=list)
    upstream_models: list[UpstreamModelConfig] = Field(default_factory=list)
    direct_routes: int = Field(default=256, ge=1)
    """``provider/model`` routes (for names not configured in ``upstream_models``) kept built, least
    recently used evicted first; an evicted one is rebuilt on its next request (its cooldown state lost)."""
    pricing: dict[str, PriceConfig] = Field(default_factory=dict)
    """Prices of models routed directly as ``provider/model`` (deployments and local models carry their own)."""
    prompt_overhead: PromptOverheadConfig = Field(default_factory=PromptOverheadConfig)
    """Prompt tokens upstream deployments may add beyond the body's bytes (budgets' worst case)."""
    reserve_max_tokens: int = Field(default=4096, ge=1)
    """Completion tokens a budgeted request without ``max_tokens`` reserves, where the model sets no
    bound of its own (and is capped to, on upstream models)."""
    ledger: bool = True
    """Record every chat completion in the usage ledger (in batches, off the request path)."""
    ledger_flush_seconds: float = Field(default=1.0, gt=0)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    aliases: dict[str, str] = Field(default_factory=dict)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    """Request sizes, connections and shutdown (README: "Limits and hardening")."""

    structured_output: StructuredOutputConfig = Field(default_factory=StructuredOutputConfig)
    """Bounds on JSON schemas and constrained decoding (see README, Structured output)."""

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.strip().lower()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    def model_ids(self) -> list[str]:
        return [m.id for m in self.models]


_ENV_FIELDS = (
    "host",
    "port",
    "data_dir",
    "log_level",
    "threads",
    "adaptive_threads",
    "max_waiting",
    "master_key",
    "database_url",
    "redis_url",
    "ledger",
)
LOOPBACK_HOSTS = ("localhost", "::1")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def check_exposure(settings: Settings) -> None:
    """Refuse to serve beyond loopback without a master key: that would be an open proxy."""
    if settings.master_key is None and not is_loopback(settings.host):
        raise ConfigError(
            f"refusing to serve on {settings.host} without a master key: anyone could use it. Set "
            "CHATGATE_MASTER_KEY (or master_key in the config file), or bind to 127.0.0.1"
        )


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
    origin: dict[str, str] = {}  # where each non-default top-level value came from, for error messages
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG")
    if config_file:
        from_file = _read_file(Path(config_file))
        data.update(from_file)
        origin.update(dict.fromkeys(from_file, f"config file {config_file}"))
    for name in _ENV_FIELDS:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            data[name] = value
            origin[name] = ENV_PREFIX + name.upper()
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    data.update(given)
    origin.update(dict.fromkeys(given, "command line"))
    model_path = model_path or env.get(ENV_PREFIX + "MODEL") or None
    if model_path:
        _serve_only(data, model_path)
        origin["models"] = f"model file {model_path}"
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_describe(exc, origin)}") from None
    _check_models(settings)
    return settings


def _describe(exc: ValidationError, origin: Mapping[str, str]) -> str:
    """Pydantic's report as one line: ``where (source): problem; ...``."""
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        where = ".".join(str(part) for part in loc) or "(top level)"
        if loc and isinstance(loc[0], str) and loc[0] in origin:
            where += f" (from {origin[loc[0]]})"
        if error["type"] == "extra_forbidden":
            what = "unknown setting" if len(loc) == 1 else "unknown key"
        else:
            what = error["msg"].removeprefix("Value error, ")
            if not isinstance(error["input"], (dict, list)):
                got = repr(error["input"])
                what += f" (got {got if len(got) <= 60 else got[:57] + '...'})"
        problems.append(f"{where}: {what}")
    return "; ".join(problems)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line report as one line: the problem and where the parser found it."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = ", ".join(part for part in (exc.context, exc.problem) if part) or "syntax error"
        if mark is not None:
            return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
        return problem
    return " ".join(str(exc).split())


def _serve_only(data: dict[str, Any], model_path: str) -> None:
    """``--model PATH``: serve that GGUF alone, under its lowercased file name; every alias now
    points at it (except one that has that very name, which would hide the model)."""
    path = Path(model_path)
    if not path.is_file():
        raise ConfigError(f"model file not found: {model_path}")
    model_id = path.stem.lower().strip()
    data["models"] = [{"id": model_id, "path": str(path)}]
    aliases = data.get("aliases") or {}
    if isinstance(aliases, dict):  # anything else is left for validation to report
        data["aliases"] = {name: model_id for name in aliases if name != model_id}


def _check_models(settings: Settings) -> None:
    if not settings.models and not settings.upstream_models:
        raise ConfigError("no models configured: the config's 'models' and 'upstream_models' lists are empty")
    served: set[str] = set()
    for model_id in settings.model_ids():
        if model_id in served:
            raise ConfigError(f"model id {model_id!r} is used by more than one entry in 'models'")
        served.add(model_id)
    for upstream in settings.upstream_models:
        if upstream.name in served:
            raise ConfigError(f"upstream model {upstream.name!r} has the same name as another model")
        served.add(upstream.name)
        for deployment in upstream.deployments:
            if deployment.provider == "local" and deployment.model not in settings.model_ids():
                raise ConfigError(f"upstream model {upstream.name!r} deploys local model {deployment.model!r}, "
                                  "which is not in 'models'")  # fmt: skip
    for alias, target in settings.aliases.items():
        if target not in served:
            raise ConfigError(f"alias {alias!r} points at {target!r}, which is not a configured model")
        if alias in served:
            raise ConfigError(f"alias {alias!r} has the same name as a configured model")
