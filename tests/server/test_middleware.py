"""One Exchange per HTTP request: its access-log line and the gateway's counters in ``/metrics`` come from the
same record as the ledger row, for answers, streams and errors alike."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest

ASK: list[Any] = [{"role": "user", "content": "Say hi"}]


def counter(metrics: str, name: str, **labels: str) -> float:
    """The value of one labelled sample of ``name`` (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def access_lines(caplog: pytest.LogCaptureFixture, request_id: str) -> list[dict[str, Any]]:
    fields = [getattr(r, "fields", {}) for r in caplog.records if r.name == "chatgate.access"]
    return [f for f in fields if f.get("request_id") == request_id]


def test_the_access_line_and_the_metrics_come_from_the_exchange(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatgate.access")
    before = http.get("/metrics").text
    done = http.post("/v1/chat/completions", json={"model": "gpt-4", "messages": ASK, "max_tokens": 3})
    streamed = http.post("/v1/chat/completions", json={"model": "gpt-4", "messages": ASK, "max_tokens": 3,
                                                       "stream": True})  # fmt: skip
    missing = http.post("/v1/chat/completions", json={"model": "no-such-model", "messages": ASK})
    assert (done.status_code, streamed.status_code, missing.status_code) == (200, 200, 404)
    after = http.get("/metrics").text

    line = access_lines(caplog, done.headers["x-request-id"])
    assert len(line) == 1
    usage = done.json()["usage"]
    assert line[0]["status"] == 200 and line[0]["stream"] is False
    assert line[0]["model"] == done.json()["model"] and line[0]["deployment"] == "local/" + done.json()["model"]
    assert (line[0]["prompt_tokens"], line[0]["completion_tokens"]) == (usage["prompt_tokens"], 3)
    [stream_line] = access_lines(caplog, streamed.headers["x-request-id"])
    assert stream_line["stream"] is True and stream_line["completion_tokens"] == 3  # the usage it asked for anyway
    [error_line] = access_lines(caplog, missing.headers["x-request-id"])
    assert (error_line["status"], error_line["error_type"], error_line["model"]) == (
        404, "invalid_request_error", "no-such-model")  # fmt: skip

    ok = {"endpoint": "chat.completions", "status": "200"}
    assert counter(after, "chatgate_gateway_requests_total", **ok) - counter(
        before, "chatgate_gateway_requests_total", **ok) == 2  # fmt: skip
    nf = {"endpoint": "chat.completions", "status": "404"}
    assert counter(after, "chatgate_gateway_requests_total", **nf) > counter(
        before, "chatgate_gateway_requests_total", **nf
    )
    tokens = {"endpoint": "chat.completions", "model": done.json()["model"]}
    assert counter(after, "chatgate_gateway_completion_tokens_total", **tokens) - counter(
        before, "chatgate_gateway_completion_tokens_total", **tokens) == 6  # fmt: skip


def test_requests_that_are_not_api_calls_leave_no_exchange_counts(http: httpx.Client) -> None:
    before = http.get("/metrics").text
    assert http.get("/health").status_code == 200
    assert http.get("/v1/models").status_code == 200
    after = http.get("/metrics").text
    assert re.findall(r"^chatgate_gateway_requests_total.*$", before, re.MULTILINE) == re.findall(
        r"^chatgate_gateway_requests_total.*$", after, re.MULTILINE)  # fmt: skip
