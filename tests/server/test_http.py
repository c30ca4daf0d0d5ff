"""Raw HTTP: OpenAI-shaped errors for every client mistake, request ids, models, health, curl."""

from __future__ import annotations

import json
import shutil
import subprocess

import httpx
import openai
import pytest

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Hi"}]


def assert_openai_error(r: httpx.Response, status: int, param: str | None, code: str | None) -> None:
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-request-id"].startswith("req_")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == (param, code), error
    assert "Traceback" not in r.text


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b'{"model": "gpt-4", "messages": [', "\udcff".encode("utf-8", "surrogatepass")],
)
def test_bad_json_is_400_never_422(http: httpx.Client, body: bytes) -> None:
    r = http.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert_openai_error(r, 400, None, None)
    assert r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "gpt-4", "messages": []}, "messages", "empty_array"),
        ({"model": "gpt-4", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"model": "gpt-4", "messages": USER, "temperature": "hot"}, "temperature", "invalid_type"),
        ({"model": "gpt-4", "messages": USER, "n": 500}, "n", "integer_above_max_value"),
        ({"messages": USER}, "model", "missing_required_parameter"),
    ],
)
def test_validation_errors_over_http(http: httpx.Client, body: dict[str, object], param: str, code: str) -> None:
    assert_openai_error(http.post(CHAT, json=body), 400, param, code)


def test_unknown_model_is_404(http: httpx.Client) -> None:
    assert_openai_error(http.post(CHAT, json={"model": "nope", "messages": USER}), 404, None, "model_not_found")


def test_unknown_route_and_wrong_method_are_openai_shaped(http: httpx.Client) -> None:
    assert_openai_error(http.get("/v1/nothing-here"), 404, None, None)
    assert_openai_error(http.put(CHAT, json={}), 405, None, None)  # GET lists stored completions


def test_every_response_carries_a_request_id(http: httpx.Client) -> None:
    ids = {http.get("/health").headers["x-request-id"], http.get("/v1/models").headers["x-request-id"]}
    assert len(ids) == 2


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "smollm2-135m-instruct" in ids and "gpt-4" in ids
    model = client.models.retrieve("local/smollm2-135m-instruct")
    assert model.id == "local/smollm2-135m-instruct" and model.object == "model"
    assert client.models.retrieve("gpt-4").owned_by == "chatgate"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("local/missing")


def test_api_v1_prefix_serves_the_same_api(http: httpx.Client) -> None:
    r = http.post("/api/v1/chat/completions", json={"model": "gpt-4", "messages": USER, "max_tokens": 2})
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    assert http.get("/api/v1/models").json()["object"] == "list"


def test_health(http: httpx.Client) -> None:
    body = http.get("/health").json()
    assert body["status"] == "ok"
    assert "smollm2-135m-instruct" in body["models"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_works(base_url: str) -> None:
    body = json.dumps({"model": "gpt-4", "messages": USER, "max_tokens": 5})
    out = subprocess.run(
        [
            "curl",
            "-sS",
            f"{base_url}/v1/chat/completions",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Authorization: Bearer anything",
            "-d",
            body,
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    answer = json.loads(out.stdout)
    assert answer["choices"][0]["message"]["role"] == "assistant"
    stream = subprocess.run(
        [
            "curl",
            "-sS",
            "-N",
            f"{base_url}/v1/chat/completions",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps({**json.loads(body), "stream": True}),
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert stream.stdout.startswith(b"data: {") and stream.stdout.endswith(b"data: [DONE]\n\n")
