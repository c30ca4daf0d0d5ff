"""Request limits and the client mistakes that used to be 500s (issue 10, items 1 and 7), against a real
``chatgate serve`` whose address space is capped: each is answered as OpenAI would (4xx in its error
shape) or refused cheaply, and after each the server answers /health and a plain completion."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.helpers import MASTER, admin_client
from tests.test_cli import CHATGATE, Server, free_port

MEMORY_CAP = 1600 * 1024 * 1024
"""Address space of the server process: ~1 GB once the model is loaded, so a 50 MB body read whole
and tokenised (+2.7 GB, as before the limits) would kill it."""
ASK = [{"role": "user", "content": "Say hi"}]


class CappedServer(Server):
    """``chatgate serve`` under ``ulimit -v`` (a cap on its address space), its logs in files."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, cap: int = MEMORY_CAP) -> None:
        self.stdout_path = cwd / "serve.stdout"
        self.stderr_path = cwd / "serve.stderr"
        capped = ["sh", "-c", f'ulimit -v {cap // 1024} && exec "$0" "$@"', CHATGATE, "serve", *args]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(capped, stdout=out, stderr=err, env=env, cwd=cwd)


@contextmanager
def serve_capped(tmp: Path, limits: dict[str, Any] | None = None) -> Iterator[tuple[CappedServer, str]]:
    """A capped server with a master key and the given ``limits`` section, (server, base URL), for a block;
    killed on leaving it, whatever happened (a start-up that failed included)."""
    port = free_port()
    config = {"threads": 1, "models": [{"id": "smollm2-135m-instruct", "n_ctx": 2048}], "limits": limits or {}}
    (tmp / "config.yaml").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATGATE_")}
    env |= {"CHATGATE_DATA_DIR": str(tmp / "data"), "CHATGATE_MASTER_KEY": MASTER, "MALLOC_ARENA_MAX": "2"}
    server = CappedServer(["--config", str(tmp / "config.yaml"), "--port", str(port)], env, tmp)
    try:
        server.wait_healthy(port)
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.kill()


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CappedServer, str]]:
    with serve_capped(tmp_path_factory.mktemp("capped")) as served:
        yield served


@pytest.fixture
def api(capped: tuple[CappedServer, str]) -> Iterator[httpx.Client]:
    with admin_client(capped[1]) as c:
        yield c


def assert_alive(api: httpx.Client, server: CappedServer | None = None) -> None:
    """/health answers and a plain completion succeeds, on a new connection (the server may have closed an
    idle one); the server logged no traceback."""
    with httpx.Client(base_url=api.base_url, headers=api.headers, timeout=120) as fresh:
        assert fresh.get("/health").status_code == 200
        r = fresh.post("/v1/chat/completions", json={"model": "gpt-4", "messages": ASK, "max_tokens": 1})
    assert r.status_code == 200, r.text
    if server is not None:
        assert server.proc.poll() is None
        out = server.output()
        assert "Traceback" not in out and "unhandled error" not in out, out[-3000:]


def openai_error(r: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error"
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4", "messages": ASK, "max_tokens": 1, **fields}


def test_a_50_mb_body_is_refused_before_it_is_read(api: httpx.Client, capped: tuple[CappedServer, str]) -> None:
    big = b'{"model": "gpt-4", "messages": [{"role": "user", "content": "' + b"a" * (50 << 20) + b'"}]}'
    r = api.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"})
    openai_error(r, 413, "request_too_large")
    assert r.headers["connection"] == "close"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"model": "gpt-4", "messages": [{"role": "user", "content": "'
        for _ in range(50):
            yield b"a" * (1 << 20)

    r = api.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    openai_error(r, 413, "request_too_large")
    assert_alive(api, capped[0])


def test_deep_json_is_a_400_on_every_route(api: httpx.Client, capped: tuple[CappedServer, str]) -> None:
    deep = "[" * 5000 + "]" * 5000
    for path in ("/v1/chat/completions", "/admin/keys", "/v1/chat/completions/chatcmpl-nope"):
        r = api.post(path, content=f'{{"metadata": {{"a": {deep}}}, "name": "x"}}'.encode())
        openai_error(r, 400, "json_too_deep")
    r = api.post("/v1/chat/completions", json=chat(tools=[{"type": "function", "function": {
        "name": "f", "parameters": json.loads("[" * 60 + "]" * 60)}}]))  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["code"] != "json_too_deep"  # under the limit: other rules
    assert_alive(api, capped[0])


def test_too_many_messages_are_refused_before_validation_and_the_most_allowed_are_tokenised(api: httpx.Client) -> None:
    many = [{"role": "user", "content": "a"}] * 30_000
    r = api.post("/v1/chat/completions", json=chat(messages=many))
    error = openai_error(r, 400, "array_above_max_length", "messages")
    assert "2048" in error["message"]
    # just under the count limit: the prompt is rendered and tokenised, then found too long for the context
    r = api.post("/v1/chat/completions", json=chat(messages=many[:2048]))
    openai_error(r, 400, "context_length_exceeded", "messages")
    assert_alive(api)


def test_sizes_of_content_strings_tools_stop_and_logit_bias(api: httpx.Client) -> None:
    huge = "a" * 1_000_001
    openai_error(api.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": huge}])), 400,
                 "string_above_max_length", "messages[0]")  # fmt: skip
    parts = [{"type": "text", "text": "a" * 900_000}] * 5
    openai_error(api.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": parts}])), 400,
                 "string_above_max_length", "messages[0]")  # fmt: skip
    openai_error(api.post("/v1/chat/completions", json=chat(user=huge)), 400, "string_above_max_length", "user")
    tool = {"type": "function", "function": {"name": "f"}}
    openai_error(
        api.post("/v1/chat/completions", json=chat(tools=[tool] * 129)), 400, "array_above_max_length", "tools"
    )
    openai_error(api.post("/v1/chat/completions", json=chat(stop=["x"] * 5)), 400, "array_above_max_length", "stop")
    bias = {str(i): 1 for i in range(301)}
    openai_error(api.post("/v1/chat/completions", json=chat(logit_bias=bias)), 400, "object_above_max_properties")
    assert_alive(api)


def test_metadata_is_held_to_openais_bounds_on_chat_keys_and_stored_completions(api: httpx.Client) -> None:
    seventeen = {f"k{i}": "v" for i in range(17)}
    openai_error(api.post("/v1/chat/completions", json=chat(metadata=seventeen)), 400, "object_above_max_properties")
    openai_error(api.post("/v1/chat/completions", json=chat(metadata={"k" * 65: "v"})), 400, "string_above_max_length")
    five_mb = {"blob": "x" * (5 << 20)}
    openai_error(api.post("/admin/keys", json={"name": "k", "metadata": five_mb}), 400, "string_above_max_length",
                 "metadata.blob")  # fmt: skip
    openai_error(api.post("/admin/keys", json={"name": "k", "metadata": {"n": list(range(600))}}), 400)
    created = api.post("/v1/chat/completions", json=chat(store=True))
    assert created.status_code == 200, created.text
    path = f"/v1/chat/completions/{created.json()['id']}"
    openai_error(api.post(path, json={"metadata": {"a": "x" * (1 << 20)}}), 400, "string_above_max_length")
    assert api.post(path, json={"metadata": {"a": "x" * 512}}).status_code == 200
    assert api.post("/admin/keys", json={"name": "k", "metadata": {"team": "a"}}).status_code == 201
    assert_alive(api)


def test_client_mistakes_that_were_500s(api: httpx.Client, capped: tuple[CappedServer, str]) -> None:
    for key in ("²", "--5"):
        openai_error(
            api.post("/v1/chat/completions", json=chat(logit_bias={key: 1})), 400, "invalid_value", "logit_bias"
        )
    for function in ("f", ["f"], 5):
        messages = [*ASK, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": function}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "ok"}]  # fmt: skip
        openai_error(api.post("/v1/chat/completions", json=chat(messages=messages)), 400, "invalid_type",
                     "messages[1].tool_calls[0].function")  # fmt: skip
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": 5}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    assert api.post("/v1/chat/completions", json=chat(response_format=fmt)).status_code == 400
    for path in ("/v1/chat/completions", "/v1/chat/completions/chatcmpl-x/messages"):
        openai_error(api.get(path, params={"limit": "²"}), 400, "invalid_value", "limit")
    assert_alive(api, capped[0])


def test_a_missing_key_is_code_null_as_openai_answers(api: httpx.Client, capped: tuple[CappedServer, str]) -> None:
    r = httpx.post(f"{capped[1]}/v1/chat/completions", json=chat())
    assert r.status_code == 401
    error = r.json()["error"]
    assert error["code"] is None and error["param"] is None and "didn't provide an API key" in error["message"]
    r = httpx.post(f"{capped[1]}/v1/chat/completions", json=chat(), headers={"authorization": "Bearer sk-wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert_alive(api)


def test_lone_surrogates_and_a_bom_name_their_param_or_none(api: httpx.Client) -> None:
    body = b'{"model": "gpt-4", "max_tokens": 1, "messages": [{"role": "user", "content": "a\\ud800"}]}'
    openai_error(api.post("/v1/chat/completions", content=body), 400, "invalid_value", "messages[0].content")
    body = b'{"model": "gpt-4", "max_tokens": 1, "messages": [{"role": "user", "content": "a"}], "\\udc00": 1}'
    assert openai_error(api.post("/v1/chat/completions", content=body), 400)["param"] is None
    bom = b"\xef\xbb\xbf" + json.dumps(chat()).encode()
    for path in ("/v1/chat/completions", "/admin/keys"):
        assert openai_error(api.post(path, content=bom), 400)["param"] is None
    assert_alive(api)


def test_a_client_gone_during_the_body_read_logs_no_traceback(capped: tuple[CappedServer, str]) -> None:
    server, url = capped
    port = int(url.rsplit(":", 1)[1])
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {MASTER}\r\n"
            sock.sendall(f'{head}content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"model":'.encode())
    for _ in range(100):  # the server notices the disconnects and logs each request as a 499
        if server.output().count('"status": 499') >= 5:
            break
        time.sleep(0.1)
    assert server.output().count('"status": 499') >= 5
    with admin_client(url) as api:
        assert_alive(api, server)
