"""``chatgate keys …``: the admin API's key and usage commands, from the terminal."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

from chatgate.config import ConfigError, Settings


def add_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="manage API keys through a running server's admin API")
    keys.add_argument("--url", help="server URL (default: http://<host>:<port> from the settings)")
    keys.add_argument("--master-key", help="the admin's key (env: CHATGATE_MASTER_KEY)")
    keys.add_argument("--config", help="YAML config file (env: CHATGATE_CONFIG)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key; it is printed once")
    create.add_argument("name")
    _settings_arguments(create)
    update = actions.add_parser("update", help="change a key's name, limits, budget, models or cache")
    update.add_argument("key_id")
    update.add_argument("--name")
    _settings_arguments(update)
    actions.add_parser("list", help="list keys (by prefix; keys themselves are never shown again)")
    show = actions.add_parser("show", help="one key, with its spend in the current budget period")
    show.add_argument("key_id")
    revoke = actions.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    usage = actions.add_parser("usage", help="requests, tokens and cost from the usage ledger, with totals")
    usage.add_argument("--group-by", default="key,model,day", help="any of key,model,day,deployment,endpoint")
    usage.add_argument("--start", help="first UTC day, YYYY-MM-DD")
    usage.add_argument("--end", help="last UTC day, YYYY-MM-DD")
    usage.add_argument("--key-id", help="only this key")
    usage.add_argument("--model", help="only this model")


def _settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", dest="models", help="allow only this model (repeatable)")
    parser.add_argument("--expires-at", type=int, help="Unix time after which the key is refused")
    parser.add_argument("--rpm", type=int, help="requests per minute")
    parser.add_argument("--tpm", type=int, help="tokens per minute")
    parser.add_argument("--budget", type=float, help="USD the key may spend per budget period")
    parser.add_argument("--budget-period", choices=["daily", "weekly", "monthly"], help="when spend resets (UTC)")
    parser.add_argument("--cache", choices=["on", "off"], help="response cache for this key")


def run(settings: Settings, args: argparse.Namespace) -> int:
    master = args.master_key or os.environ.get("CHATGATE_MASTER_KEY") or settings.master_key
    if not master:
        raise ConfigError("keys commands need the master key: --master-key or CHATGATE_MASTER_KEY")
    url = args.url or f"http://{settings.host}:{settings.port}"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {master}"}, timeout=30) as http:
        try:
            response = _call(http, args)
        except httpx.HTTPError as exc:
            raise ConfigError(f"cannot reach the server at {url}: {exc.__class__.__name__}") from None
    body = response.json()
    if response.status_code >= 400:
        print(f"chatgate: {body.get('error', {}).get('message', response.text)}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2))
    return 0


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    given = {"name": args.name, "allowed_models": args.models, "expires_at": args.expires_at, "rpm": args.rpm,
             "tpm": args.tpm, "max_budget": args.budget, "budget_period": args.budget_period,
             "cache": None if args.cache is None else args.cache == "on"}  # fmt: skip
    return {k: v for k, v in given.items() if v is not None}


def _call(http: httpx.Client, args: argparse.Namespace) -> httpx.Response:
    if args.action == "create":
        return http.post("/admin/keys", json=_payload(args))
    if args.action == "update":
        return http.patch(f"/admin/keys/{args.key_id}", json=_payload(args))
    if args.action == "list":
        return http.get("/admin/keys")
    if args.action == "show":
        return http.get(f"/admin/keys/{args.key_id}")
    if args.action == "usage":
        params = {"group_by": args.group_by, "start": args.start, "end": args.end, "key_id": args.key_id,
                  "model": args.model}  # fmt: skip
        return http.get("/admin/usage", params={k: v for k, v in params.items() if v is not None})
    return http.delete(f"/admin/keys/{args.key_id}")
