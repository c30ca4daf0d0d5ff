"""``chatgate keys …``: the admin API's key commands, from the terminal."""

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
    create.add_argument("--model", action="append", dest="models", help="allow only this model (repeatable)")
    create.add_argument("--expires-at", type=int, help="Unix time after which the key is refused")
    actions.add_parser("list", help="list keys (by prefix; keys themselves are never shown again)")
    revoke = actions.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")


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


def _call(http: httpx.Client, args: argparse.Namespace) -> httpx.Response:
    if args.action == "create":
        payload: dict[str, Any] = {"name": args.name}
        if args.models:
            payload["allowed_models"] = args.models
        if args.expires_at is not None:
            payload["expires_at"] = args.expires_at
        return http.post("/admin/keys", json=payload)
    if args.action == "list":
        return http.get("/admin/keys")
    return http.delete(f"/admin/keys/{args.key_id}")
