"""Keys and the admin API through a real server with a master key, with the official SDK."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from chatgate.cli import main
from chatgate.config import ConfigError, check_exposure, load_settings
from tests.conftest import StartServer, make_settings
from tests.gateway.helpers import MASTER, admin_client, create_key, sdk
from tests.serving import ServerThread, serve

ASK: list[Any] = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    data = tmp_path_factory.mktemp("data")
    with serve(make_settings(master_key=MASTER, data_dir=str(data))) as server:
        yield server


@pytest.fixture
def admin(secured: ServerThread) -> Iterator[httpx.Client]:
    with admin_client(secured, timeout=60) as c:
        yield c


def test_a_missing_or_wrong_key_is_401_in_openais_shape(secured: ServerThread) -> None:
    with httpx.Client(base_url=secured.base_url) as http:
        r = http.post("/v1/chat/completions", json={"model": "gpt-4", "messages": ASK})
    assert r.status_code == 401 and "didn't provide an API key" in r.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError) as err:
        sdk(secured, "sk-cg-wrong-key-abcdef").chat.completions.create(model="gpt-4", messages=ASK)
    assert err.value.code == "invalid_api_key"
    assert "wrong-key" not in err.value.message


def test_a_created_key_works_with_the_sdk_and_is_shown_only_once(admin: httpx.Client, secured: ServerThread) -> None:
    created = create_key(admin)
    r = sdk(secured, created["key"]).chat.completions.create(model="gpt-4", messages=ASK, max_tokens=2)
    assert r.choices
    listed = admin.get("/admin/keys").json()["data"]
    assert created["id"] in [k["id"] for k in listed]
    assert all("key" not in k for k in listed) and created["key"] not in str(listed)
    assert admin.get(f"/admin/keys/{created['id']}").json()["prefix"] == created["key"][:12]


def test_revoked_and_expired_keys_are_refused(admin: httpx.Client, secured: ServerThread) -> None:
    revoked = create_key(admin)
    assert admin.delete(f"/admin/keys/{revoked['id']}").json()["revoked_at"] is not None
    expired = create_key(admin, expires_at=int(time.time()) - 5)
    for key in (revoked["key"], expired["key"]):
        with pytest.raises(openai.AuthenticationError):
            sdk(secured, key).chat.completions.create(model="gpt-4", messages=ASK, max_tokens=2)


def test_a_key_limited_to_some_models_gets_404_for_others(admin: httpx.Client, secured: ServerThread) -> None:
    limited = create_key(admin, allowed_models=["smollm2-135m-instruct"])
    client = sdk(secured, limited["key"])
    assert client.chat.completions.create(model="smollm2-135m-instruct", messages=ASK, max_tokens=1).choices
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4", messages=ASK)
    assert err.value.code == "model_not_found"
    assert [m.id for m in client.models.list()] == ["smollm2-135m-instruct"]
    admin.patch(f"/admin/keys/{limited['id']}", json={"allowed_models": ["smollm2-135m-instruct", "gpt-4"]})
    assert client.chat.completions.create(model="gpt-4", messages=ASK, max_tokens=1).choices


def test_the_admin_api_needs_the_master_key(admin: httpx.Client, secured: ServerThread) -> None:
    user = create_key(admin)
    with httpx.Client(base_url=secured.base_url, headers={"Authorization": f"Bearer {user['key']}"}) as http:
        r = http.get("/admin/keys")
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_permissions"
    bad = admin.post("/admin/keys", json={"name": 5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "name"
    assert admin.get("/admin/keys/key_missing").status_code == 404
    for field, value in (("tpm", 10**12), ("max_budget", -1), ("budget_period", "hourly"), ("cache", "yes")):
        refused = admin.post("/admin/keys", json={"name": "x", field: value})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == field, refused.text
    assert admin.patch("/admin/keys/key_missing", json={"max_budget": 1}).status_code == 404


def test_a_key_never_appears_in_the_logs(
    admin: httpx.Client, secured: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = create_key(admin)
    client = sdk(secured, created["key"])
    client.chat.completions.create(model="gpt-4", messages=ASK, max_tokens=1)
    with pytest.raises(openai.AuthenticationError):
        sdk(secured, created["key"] + "x").chat.completions.create(model="gpt-4", messages=ASK)
    text = caplog.text + "".join(str(getattr(r, "fields", "")) for r in caplog.records)
    assert created["key"] not in text and MASTER not in text
    assert created["id"] in text  # the key's id is what identifies a caller in the logs


def test_keys_survive_a_restart(tmp_path: Path, start_server: StartServer) -> None:
    settings = make_settings(master_key=MASTER, data_dir=str(tmp_path))
    with serve(settings) as first, admin_client(first) as http:
        key = create_key(http)["key"]
    second = start_server(settings)
    assert sdk(second, key).chat.completions.create(model="gpt-4", messages=ASK, max_tokens=1).choices


def test_open_mode_is_only_allowed_on_loopback() -> None:
    check_exposure(load_settings(env={}))
    with pytest.raises(ConfigError, match="without a master key"):
        check_exposure(load_settings(env={"CHATGATE_HOST": "0.0.0.0"}))
    check_exposure(load_settings(env={"CHATGATE_HOST": "0.0.0.0", "CHATGATE_MASTER_KEY": MASTER}))


def test_the_admin_api_is_off_in_open_mode(http: httpx.Client) -> None:
    r = http.get("/admin/keys")
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"


def test_the_keys_cli_drives_the_admin_api(secured: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["keys", "--url", secured.base_url, "--master-key", MASTER]
    assert main([*base, "create", "cli-key", "--model", "gpt-4"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["key"].startswith("sk-cg-") and created["allowed_models"] == ["gpt-4"]
    assert main([*base, "list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert created["id"] in [k["id"] for k in listed["data"]] and created["key"] not in json.dumps(listed)
    assert main([*base, "revoke", created["id"]]) == 0
    assert json.loads(capsys.readouterr().out)["revoked_at"] is not None
    assert main(["keys", "--url", secured.base_url, "--master-key", "wrong", "list"]) == 1
    assert "Incorrect API key" in capsys.readouterr().err
