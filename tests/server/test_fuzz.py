"""A seeded fuzzer over the chat, stored-completion and admin routes of the real server (issue 10):
a few thousand malformed, oversized, mistyped and occasionally valid requests. None may get a 5xx or a
framework 422, every error is in OpenAI's shape, nothing is logged as an error or with a traceback,
and the server still answers at the end. Valid requests ask for one token, so few reach the model."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings
from tests.gateway.helpers import MASTER
from tests.serving import ServerThread, serve

SEEDS = [20261128, 6]  # the second found a 500 (a boolean property schema)
REQUESTS = 2000
ASK = [{"role": "user", "content": "Say hi"}]

SCALARS: list[Any] = [None, True, False, 0, -1, 1, 7, 2**31, 2**63, -(2**70), 1e308, -0.0, 0.5, 101, -101, "",
                      "x", "²", "--5", "١٢", "\x00", "\ud800", "\ufeff", "<|im_end|>", "a" * 5000, "gpt-4",
                      "user"]  # fmt: skip
CHAT_FIELDS = ["messages", "model", "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens",
               "logit_bias", "tools", "tool_choice", "response_format", "stream", "stream_options", "metadata",
               "store", "seed", "logprobs", "top_logprobs", "functions", "function_call", "user", "presence_penalty",
               "frequency_penalty", "parallel_tool_calls", "top_k", "min_p", "fallback_models", "timeout",
               "retries", "modalities", "prediction", "audio", "service_tier"]  # fmt: skip
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id", "function_call", "refusal", "audio"]
KEY_FIELDS = ["name", "expires_at", "allowed_models", "metadata", "rpm", "tpm", "max_budget", "budget_period", "cache"]


class Fuzzer:
    """Random values and bodies from one seed; each draw is a function of the seed alone."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def value(self, depth: int = 0) -> Any:
        roll = self.rng.random()
        if depth > 3 or roll < 0.6:
            return self.rng.choice(SCALARS)
        if roll < 0.75:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 4))]
        if roll < 0.8:
            return json.loads("[" * 300 + "]" * 300) if self.rng.random() < 0.5 else {"a": [[[[[[{}]]]]]]}
        if roll < 0.9:
            return self.message()
        keys = [*self.rng.sample(CHAT_FIELDS, 2), "type", "function", "name", "pattern", "schema", "text"]
        return {self.rng.choice(keys): self.value(depth + 1) for _ in range(self.rng.randint(0, 3))}

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.rng.choice(["user", "assistant", "system", "tool", "bogus"])}
        for field in self.rng.sample(MESSAGE_FIELDS, self.rng.randint(0, 3)):
            message[field] = self.value(2)
        if self.rng.random() < 0.3:
            function = self.rng.choice(["f", ["f"], 5, {"name": 5}, {"name": "f", "arguments": {}}, None])
            message["tool_calls"] = [{"id": "c1", "type": "function", "function": function}]
        return message

    def chat(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": "gpt-4", "messages": list(ASK), "max_tokens": 1}
        for _ in range(self.rng.randint(1, 3)):
            roll = self.rng.random()
            if roll < 0.5:
                body[self.rng.choice(CHAT_FIELDS)] = self.value()
            elif roll < 0.7:
                body["messages"] = [self.message() for _ in range(self.rng.randint(0, 3))]
            elif roll < 0.8:
                body.pop(self.rng.choice(list(body)), None)
            elif roll < 0.9:
                schema = {"type": "object", "properties": {"a": {self.rng.choice(["pattern", "type", "enum",
                          "minLength", "items", "required", "format", "$ref"]): self.value(2)}}}  # fmt: skip
                body["response_format"] = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
            else:
                body[self.rng.choice(["x" * 70, "\ud800", "extra"])] = self.value()
        if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
            body["max_tokens"] = 1  # valid requests stay cheap
        return body

    def raw(self, body: Any) -> bytes:
        """The body as JSON, sometimes damaged on the way."""
        data = json.dumps(body).encode()
        roll = self.rng.random()
        if roll < 0.85:
            return data
        damages: list[Callable[[], bytes]] = [
            lambda: data[: self.rng.randint(0, len(data))],
            lambda: b"\xef\xbb\xbf" + data,
            lambda: data.replace(b'"', b"'", 1),
            lambda: b"\xff\xfe" + data,
            lambda: b"[" * 5000 + b"]" * 5000,
            lambda: b"",
            lambda: b"null",
            lambda: data + b"garbage",
        ]
        return self.rng.choice(damages)()

    def query(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in self.rng.sample(["limit", "order", "after", "model", "metadata[k]", "group_by", "start", "end"], 2):
            out[name] = str(self.rng.choice(["²", "0", "5", "101", "-1", "asc", "desc", "x", "", "2026-01-01",
                                             "key,model", "a" * 300, "1e3"]))  # fmt: skip
        return out


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[ServerThread]:
    with serve(make_settings(master_key=MASTER)) as running:
        yield running


def _check(r: httpx.Response, number: int) -> None:
    what = f"request {number}: {r.request.method} {r.request.url} {r.request.content[:400]!r}"
    assert r.status_code < 500 and r.status_code != 422, f"{what}: {r.status_code} {r.text[:500]}"
    if r.status_code >= 400:
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, f"{what}: {r.text[:500]}"
        assert error["param"] != "", f"{what}: {r.text[:500]}"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", SEEDS)
def test_fuzzed_requests_never_get_a_5xx_422_or_a_traceback(
    fuzzed: ServerThread, caplog: pytest.LogCaptureFixture, seed: int
) -> None:
    fuzz = Fuzzer(seed)
    headers = {"authorization": f"Bearer {MASTER}", "content-type": "application/json"}
    caplog.set_level(logging.INFO)
    with httpx.Client(base_url=fuzzed.base_url, headers=headers, timeout=120) as http:
        stored = http.post("/v1/chat/completions", json={"model": "gpt-4", "messages": ASK, "max_tokens": 1,
                                                          "store": True}).json()["id"]  # fmt: skip
        key = http.post("/admin/keys", json={"name": "fuzz"}).json()["id"]
        for i in range(REQUESTS):
            roll = fuzz.rng.random()
            if roll < 0.6:
                r = http.post("/v1/chat/completions", content=fuzz.raw(fuzz.chat()))
            elif roll < 0.7:
                body = {"metadata": fuzz.value()} if fuzz.rng.random() < 0.7 else fuzz.value()
                r = http.post(f"/v1/chat/completions/{fuzz.rng.choice([stored, 'chatcmpl-nope'])}",
                              content=fuzz.raw(body))  # fmt: skip
            elif roll < 0.8:
                path = fuzz.rng.choice(["/v1/chat/completions", f"/v1/chat/completions/{stored}/messages",
                                        "/admin/usage", "/admin/keys"])  # fmt: skip
                r = http.get(path, params=fuzz.query())
            elif roll < 0.95:
                body = {field: fuzz.value() for field in fuzz.rng.sample(KEY_FIELDS, fuzz.rng.randint(1, 4))}
                if fuzz.rng.random() < 0.5:
                    r = http.post("/admin/keys", content=fuzz.raw({"name": "k", **body}))
                else:
                    r = http.patch(f"/admin/keys/{key}", content=fuzz.raw(body))
            else:
                r = http.post("/v1/chat/completions", content=fuzz.raw(fuzz.chat()), headers={"authorization": ""})
            _check(r, i)
        assert http.get("/health").status_code == 200
        done = http.post("/v1/chat/completions", json={"model": "gpt-4", "messages": ASK, "max_tokens": 2})
        assert done.status_code == 200 and done.json()["choices"]
    tracebacks = [rec for rec in caplog.records if rec.exc_info or "Traceback" in rec.getMessage()]
    assert not tracebacks, [f"{rec.name}: {rec.getMessage()}" for rec in tracebacks[:5]]
    assert not [rec for rec in caplog.records if rec.name.startswith(("chatgate.access", "chatgate.server"))
                and rec.levelno >= logging.ERROR]  # fmt: skip
