"""What the tests of a server with a master key share: the master key, the admin's client, and new keys
with the official SDK in front of them."""

from __future__ import annotations

from typing import Any

import httpx
import openai

from tests.serving import ServerThread

MASTER = "sk-master-0123456789abcdef"
"""The master key of every test server that has one (the admin API's key)."""
ADMIN_HEADERS = {"Authorization": f"Bearer {MASTER}"}


def admin_client(server: ServerThread | str, timeout: float = 120) -> httpx.Client:
    """An HTTP client with the master key, for ``server`` (or a base URL); use it in a ``with`` block."""
    base_url = server if isinstance(server, str) else server.base_url
    return httpx.Client(base_url=base_url, headers=ADMIN_HEADERS, timeout=timeout)


def create_key(admin: httpx.Client, name: str = "test", **fields: Any) -> dict[str, Any]:
    """A new key, as ``POST /admin/keys`` answers it: its secret (shown this once) in ``"key"``, its id in
    ``"id"``, its limits and budget as ``fields`` set them."""
    r = admin.post("/admin/keys", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def new_key(server: ServerThread, name: str = "test", **fields: Any) -> tuple[str, str]:
    """(id, secret) of a new key on ``server``, made through an admin client of its own."""
    with admin_client(server) as admin:
        created = create_key(admin, name, **fields)
    return created["id"], created["key"]


def sdk(server: ServerThread, key: str, max_retries: int = 0) -> openai.OpenAI:
    """The official SDK on ``server`` with ``key``; its own retries off unless asked."""
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=max_retries)


def sdk_with_new_key(server: ServerThread, name: str = "test", **fields: Any) -> openai.OpenAI:
    """The official SDK on ``server`` with a new key of ``fields``."""
    return sdk(server, new_key(server, name, **fields)[1])
