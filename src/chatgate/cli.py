"""The ``chatgate`` command: ``serve``, ``chat``, ``models``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from chatgate.config import ConfigError, Settings, load_settings

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
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {k: getattr(args, k, None) for k in ("host", "port", "threads")}
    return load_settings(args.config, overrides=overrides, model_path=args.model_path)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"chatgate: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(settings)
    if args.command == "chat":
        return _chat(settings, args)
    return _models(settings)


def _serve(settings: Settings) -> int:
    import uvicorn

    from chatgate.logs import setup_logging
    from chatgate.server.app import create_app

    setup_logging(settings.log_level)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    log.info("serving on http://%s:%d/v1", settings.host, settings.port)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None, access_log=False)
    return 0


def _models(settings: Settings) -> int:
    for model in settings.models:
        print(f"{model.id}\t{model.path or '(embedded SmolLM2-135M-Instruct)'}")
    for alias, target in settings.aliases.items():
        print(f"{alias}\t-> {target}")
    return 0


def _chat(settings: Settings, args: argparse.Namespace) -> int:
    from chatgate.logs import setup_logging

    setup_logging("warning")
    try:
        asyncio.run(_chat_loop(settings, args))
    except (KeyboardInterrupt, EOFError):
        print()
    return 0


async def _chat_loop(settings: Settings, args: argparse.Namespace) -> None:
    from chatgate.backends.local import close_local_backend, load_local_backend
    from chatgate.context import RequestContext
    from chatgate.errors import ChatgateError
    from chatgate.protocol import ChatCompletionRequest

    cfg = settings.models[0]
    backend = load_local_backend(cfg, settings)
    messages: list[dict[str, Any]] = [{"role": "system", "content": args.system}] if args.system else []
    print(f"chatting with {cfg.id}; Ctrl-D to quit", file=sys.stderr)
    try:
        while True:
            line = await asyncio.to_thread(input, "> ")
            if not line.strip():
                continue
            messages.append({"role": "user", "content": line})
            body: dict[str, Any] = {"model": cfg.id, "messages": messages, "stream": True}
            if args.temperature is not None:
                body["temperature"] = args.temperature
            req = ChatCompletionRequest.model_validate_json(json.dumps(body))
            reply = ""
            try:
                async for chunk in backend.stream(req, RequestContext(request_id="cli")):
                    for choice in chunk.choices:
                        piece = choice.delta.content or ""
                        reply += piece
                        print(piece, end="", flush=True)
            except ChatgateError as exc:
                print(f"\n[error] {exc.message}", file=sys.stderr)
                messages.pop()
                continue
            print()
            messages.append({"role": "assistant", "content": reply})
    finally:
        close_local_backend(backend)


if __name__ == "__main__":
    sys.exit(main())
