"""The one upstream error mapper: each provider's error forms, as the client sees them, and the
deployment's key masked in everything taken from an upstream body."""

from __future__ import annotations

from typing import Any

import pytest

from chatgate.backends.upstream_errors import (
    ANTHROPIC,
    GEMINI,
    OPENAI,
    ErrorDialect,
    map_error,
    map_event_error,
    retry_after,
)
from chatgate.errors import RETRYABLE_STATUS, ChatgateError, UpstreamError

KEY = "sk-upstream-secret-123"


def openai_body(message: str, type_: str | None = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def anthropic_body(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


def gemini_body(code: int, status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": list(details)}}


def test_the_taxonomy_lives_at_the_bottom_and_keeps_its_behaviour() -> None:
    assert issubclass(UpstreamError, ChatgateError)
    error = UpstreamError("slow down", status=429, retry_after=2.4)
    assert (error.retryable, error.headers(), error.context_window) == (True, {"retry-after": "2"}, False)
    assert not UpstreamError("bad", status=400).retryable and UpstreamError("x", status=529).retryable
    assert UpstreamError("x", status=503, retry_after=3).headers() == {}  # retry-after goes with a 429 only
    assert {408, 409, 429, 500, 502, 503, 504, 529} == RETRYABLE_STATUS


ECHOES = [
    (OPENAI, openai_body(f"Incorrect API key provided: {KEY}", type_=f"t-{KEY}", code=f"c-{KEY}")),
    (ANTHROPIC, anthropic_body(f"invalid_{KEY}", f"bad key prefix {KEY}")),
    (GEMINI, gemini_body(400, f"INVALID_{KEY}", f"Bad request for key {KEY}.")),
]


@pytest.mark.parametrize(("dialect", "body"), ECHOES)
@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
def test_a_key_the_provider_echoes_is_masked_everywhere(dialect: ErrorDialect, body: Any, status: int) -> None:
    error = map_error(status, body, {}, "someai", KEY, dialect=dialect)
    assert KEY not in str(error.body()) and "[redacted]" in error.message
    event = map_event_error(body, "someai", KEY, dialect=dialect)
    assert KEY not in str(event.body()) and "[redacted]" in event.message


@pytest.mark.parametrize("dialect", [OPENAI, ANTHROPIC, GEMINI])
@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_a_final_502_without_the_upstream_text(dialect: ErrorDialect, status: int) -> None:
    error = map_error(status, openai_body(f"bad key {KEY}"), {}, "someai", KEY, dialect=dialect)
    assert (error.status, error.type, error.code, error.retryable) == (502, "upstream_auth_error",
                                                                       "upstream_auth_failed", False)  # fmt: skip
    assert "bad key" not in error.message


def test_openai_429_carries_retry_after_ms_and_its_own_type_and_code() -> None:
    error = map_error(429, openai_body("slow down", "tokens", None), {"retry-after-ms": "250"}, "fakeai", None,
                      dialect=OPENAI)  # fmt: skip
    assert (error.status, error.type, error.code, error.retryable, error.retry_after) == (
        429, "tokens", "rate_limit_exceeded", True, 0.25)  # fmt: skip


def test_a_body_that_is_not_json_still_maps_by_status() -> None:
    error = map_error(503, None, {"retry-after": "4"}, "fakeai", KEY, dialect=OPENAI)
    assert (error.status, error.type, error.code, error.retryable, error.retry_after) == (
        503, "server_error", None, True, 4.0)  # fmt: skip
    assert error.message == "The upstream provider 'fakeai' answered 503."
    assert map_error(501, "oops", {}, "fakeai", KEY, dialect=OPENAI).retryable is False
    assert map_error(501, "oops", {}, "gemini", KEY, dialect=GEMINI).retryable is True  # any 5xx, for Gemini


CONTEXT = [
    (OPENAI, openai_body("This model's maximum context length is 8192 tokens.", code="context_length_exceeded")),
    (OPENAI, {"error": {"code": 400, "message": "request (4476 tokens) exceeds the available context size (4096 "
                        "tokens)", "type": "exceed_context_size_error", "n_prompt_tokens": 4476}}),  # llama.cpp
    (OPENAI, {"object": "error", "message": "This model's maximum context length is 32768 tokens. However, you "
              "requested 41648 tokens.", "type": "BadRequestError", "param": None, "code": 400}),  # vLLM
    (ANTHROPIC, anthropic_body("invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum")),
    (ANTHROPIC, anthropic_body("invalid_request_error", "input length and `max_tokens` exceed context limit: "
                               "188240 + 21333 > 200000, decrease input length or `max_tokens` and try again")),
    (GEMINI, gemini_body(400, "INVALID_ARGUMENT", "The input token count (1054016) exceeds the maximum number of "
                         "tokens allowed (1048576).")),
]  # fmt: skip


@pytest.mark.parametrize(("dialect", "body"), CONTEXT)
def test_every_providers_context_window_error_is_openais(dialect: ErrorDialect, body: Any) -> None:
    error = map_error(400, body, {}, "someai", KEY, dialect=dialect)
    assert (error.status, error.type, error.code, error.retryable, error.context_window) == (
        400, "invalid_request_error", "context_length_exceeded", False, True)  # fmt: skip


@pytest.mark.parametrize("dialect", [OPENAI, ANTHROPIC, GEMINI])
def test_other_bad_requests_are_not_context_window_errors(dialect: ErrorDialect) -> None:
    error = map_error(400, anthropic_body("invalid_request_error", "messages: at least one message is required"),
                      {}, "someai", KEY, dialect=dialect)  # fmt: skip
    assert (error.status, error.retryable, error.context_window) == (400, False, False)


ANTHROPIC_STATUSES = [
    # status, type in the body, client status, type, code, retryable
    (400, "invalid_request_error", 400, "invalid_request_error", "invalid_request_error", False),
    (404, "not_found_error", 404, "invalid_request_error", "not_found_error", False),
    (413, "request_too_large", 400, "invalid_request_error", "request_too_large", False),
    (429, "rate_limit_error", 429, "requests", "rate_limit_exceeded", True),
    (500, "api_error", 500, "server_error", "api_error", True),
    (529, "overloaded_error", 503, "server_error", "overloaded", True),
]


@pytest.mark.parametrize(("status", "kind", "client_status", "type_", "code", "retryable"), ANTHROPIC_STATUSES)
def test_anthropic_statuses_and_error_events(
    status: int, kind: str, client_status: int, type_: str, code: str, retryable: bool
) -> None:
    body = anthropic_body(kind, "nope")
    for error in (map_error(status, body, {}, "anthropic", KEY, dialect=ANTHROPIC),
                  map_event_error(body, "anthropic", KEY, dialect=ANTHROPIC)):  # fmt: skip
        assert (error.status, error.type, error.code, error.retryable) == (client_status, type_, code, retryable)


def test_gemini_status_names_retry_info_and_refused_keys() -> None:
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}
    limited = gemini_body(429, "RESOURCE_EXHAUSTED", "quota", retry)
    error = map_error(429, limited, {}, "gemini", KEY, dialect=GEMINI)
    assert (error.status, error.type, error.code, error.retry_after) == (429, "requests", "rate_limit_exceeded", 31.0)
    reason = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
    refused = map_error(400, gemini_body(400, "INVALID_ARGUMENT", "API key not valid.", reason), {}, "gemini", KEY,
                        dialect=GEMINI)  # fmt: skip
    assert (refused.status, refused.type) == (502, "upstream_auth_error")
    odd = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": ["not", "a", "string"]}
    assert (
        map_error(400, gemini_body(400, "INVALID_ARGUMENT", "x", odd), {}, "gemini", KEY, dialect=GEMINI).status == 400
    )


EVENTS = [
    # dialect, event, client status
    (GEMINI, {"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}, 503),
    (GEMINI, {"error": {"message": "quota", "status": "RESOURCE_EXHAUSTED"}}, 429),  # no numeric code: by status
    (GEMINI, {"error": {"message": "?", "status": "SOMETHING_NEW"}}, 502),
    (OPENAI, {"error": {"message": "failed", "type": "server_error", "code": None}}, 502),
    (OPENAI, {"error": {"message": "bad", "type": "BadRequestError", "code": 400}}, 400),  # vLLM's numeric code
    (OPENAI, {"error": {"message": "odd", "code": True}}, 502),
    (OPENAI, {"error": "just a string"}, 502),
    (ANTHROPIC, {"type": "error", "error": {"type": "something_new", "message": "?"}}, 502),
]


@pytest.mark.parametrize(("dialect", "event", "status"), EVENTS)
def test_an_error_event_maps_as_the_status_it_stands_for(dialect: ErrorDialect, event: Any, status: int) -> None:
    assert map_event_error(event, "someai", KEY, dialect=dialect).status == status


@pytest.mark.parametrize("value", ["soon", "Mon, 99 Foo 2026", "", "1e999x"])
def test_a_retry_after_that_is_neither_seconds_nor_a_date_is_no_hint(value: str) -> None:
    assert retry_after({"retry-after": value}) is None
