"""The ``chatgate`` command: ``serve``, ``chat``, ``models``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from chatgate import keys_cli
from chatgate.config import ConfigError, LocalModelConfig, Settings, check_exposure, load_settings
from chatgate.errors import ChatgateError
from chatgate.logs import setup_logging
from chatgate.protocol import ChatCompletionRequest
from chatgate.protocol.validation import parse_chat_request

if TYPE_CHECKING:
    from chatgate.runtime import Runtime

log = logging.getLogger("chatgate.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatgate", description="OpenAI-compatible chat completions server.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="YAML config file (env: CHATGATE_CONFIG)")
        p.add_argument("--model", dest="model_path", help="serve this GGUF file instead of the configured models")
        p.add_argument("--threads", type=int, help="CPU threads for the local engine (env: CHATGATE_THREADS)")

    serve = sub.add_parser("serve", help="serve the OpenAI-compatible API")
    common(serve)
    serve.add_argument("--host", help="address to bind (env: CHATGATE_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (env: CHATGATE_PORT; default 8000)")

    chat = sub.add_parser("chat", help="chat with a model in the terminal, streaming")
    common(chat)
    chat.add_argument("--use", dest="use_model", help="model name to talk to (default: the first configured model)")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--temperature", type=float, default=None)

    models = sub.add_parser("models", help="list the models and aliases served")
    common(models)
    keys_cli.add_parser(sub)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {k: getattr(args, k, None) for k in ("host", "port", "threads")}
    return load_settings(args.config, overrides=overrides, model_path=getattr(args, "model_path", None))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        if args.command == "serve":
            return _serve(settings)
        if args.command == "chat":
            return _chat(settings, args)
        if args.command == "keys":
            return keys_cli.run(settings, args)
        return _models(settings)
    except ConfigError as exc:
        print(f"chatgate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before uvicorn (or the chat loop) took charge of it
        print(file=sys.stderr)
        return 130


def _check_model_files(settings: Settings) -> None:
    """Refuse, in one line, a configured model file that is missing or not a GGUF."""
    for model in settings.models:
        if model.path is None:
            continue
        try:
            with open(model.path, "rb") as f:
                magic = f.read(4)
        except OSError as exc:
            raise ConfigError(f"model {model.id!r}: cannot read {model.path}: {exc.strerror or exc}") from None
        if magic != b"GGUF":
            raise ConfigError(f"model {model.id!r}: {model.path} is not a GGUF file")


def _serve(settings: Settings) -> int:
    try:
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create data_dir {settings.data_dir}: {exc.strerror or exc}") from None
    _check_model_files(settings)
    check_exposure(settings)

    # uvicorn shuts down gracefully on SIGINT and SIGTERM, then re-raises the signal so that the
    # previous handler sees it: SIGINT becomes a KeyboardInterrupt that uvicorn.run swallows (exit 0),
    # but the default SIGTERM action would kill the process after a clean shutdown (exit -15). Make a
    # requested stop exit 0 either way; before uvicorn installs its handlers, SIGTERM just exits.
    signal.signal(signal.SIGTERM, _exit_quietly)

    # Imported here, not at the top: `chatgate models` and config errors need no web server or llama.cpp.
    import uvicorn  # noqa: PLC0415

    from chatgate.server.app import create_app  # noqa: PLC0415
    from chatgate.server.connections import GracefulServer, uvicorn_options  # noqa: PLC0415

    setup_logging(settings.log_level)
    log.info("serving on http://%s:%d/v1", settings.host, settings.port)
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                            **uvicorn_options(settings.limits))  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises SIGINT once it has shut down
        GracefulServer(config, app.state.stopping, settings.limits.shutdown_timeout_seconds).run()
    return 0


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _models(settings: Settings) -> int:
    for model in settings.models:
        print(f"{model.id}\t{model.path or '(embedded SmolLM2-135M-Instruct)'}")
    for alias, target in settings.aliases.items():
        print(f"{alias}\t-> {target}")
    return 0


def _chat_model(settings: Settings, name: str | None) -> LocalModelConfig:
    """The model ``--use NAME`` designates (an id, ``local/<id>`` or an alias); default: the first."""
    if name is None:
        return settings.models[0]
    target = settings.aliases.get(name, name.removeprefix("local/"))
    for cfg in settings.models:
        if cfg.id == target:
            return cfg
    known = ", ".join([*settings.model_ids(), *settings.aliases])
    raise ConfigError(f"--use {name}: no such model or alias (known: {known})")


def _chat(settings: Settings, args: argparse.Namespace) -> int:
    from chatgate.backends.local.llama import ModelLoadError  # noqa: PLC0415
    from chatgate.runtime import Runtime  # noqa: PLC0415

    cfg = _chat_model(settings, args.use_model)
    setup_logging("warning")
    # The prompt is read on the main thread, outside the event loop: a Ctrl-C there raises at once
    # (a reader thread would keep the process waiting for a line after the loop had shut down).
    with asyncio.Runner() as runner:
        try:
            runtime = runner.run(Runtime.open(settings))
        except ModelLoadError as exc:
            raise ConfigError(str(exc)) from None
        print(f"chatting with {cfg.id}; Ctrl-D to quit", file=sys.stderr)
        try:
            _chat_loop(runner, runtime, cfg.id, args)
        except (KeyboardInterrupt, EOFError):
            print()
        finally:
            runner.run(runtime.aclose())
    return 0


def _chat_loop(runner: asyncio.Runner, runtime: Runtime, model_id: str, args: argparse.Namespace) -> None:
    messages: list[dict[str, Any]] = [{"role": "system", "content": args.system}] if args.system else []
    while True:
        line = input("> ")
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        body: dict[str, Any] = {"model": model_id, "messages": messages, "stream": True}
        if args.temperature is not None:
            body["temperature"] = args.temperature
        try:
            raw = json.dumps(body).encode()
            req = parse_chat_request(raw)
            reply = runner.run(_print_reply(runtime, req, len(raw)))
        except ChatgateError as exc:
            print(f"\n[error] {exc.message}", file=sys.stderr)
            messages.pop()
            continue
        print()
        messages.append({"role": "assistant", "content": reply})


async def _print_reply(runtime: Runtime, req: ChatCompletionRequest, body_bytes: int) -> str:
    """Stream one reply to stdout as it is generated, through the gateway; return its text."""
    reply = ""
    async for chunk in runtime.stream(req, body_bytes=body_bytes):
        for choice in chunk.choices:
            piece = choice.delta.content or ""
            reply += piece
            print(piece, end="", flush=True)
    return reply


if __name__ == "__main__":
    sys.exit(main())
