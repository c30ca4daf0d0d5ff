"""Error mapping of the OpenAI-compatible backend (routing tests drive the rest through a fake)."""

from __future__ import annotations

from chatgate.backends.openai_compat import map_error

KEY = "sk-upstream-secret-123"


def test_a_key_the_provider_echoes_is_masked() -> None:
    body = {"error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_request_error"}}
    err = map_error(400, body, {}, "fakeai", KEY)
    assert KEY not in err.message and "[redacted]" in err.message


def test_provider_auth_failures_are_a_final_502() -> None:
    err = map_error(401, {"error": {"message": "bad key"}}, {}, "fakeai", KEY)
    assert (err.status, err.type, err.retryable) == (502, "upstream_auth_error", False)


def test_429_carries_retry_after_ms() -> None:
    err = map_error(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "250"}, "fakeai")
    assert err.status == 429 and err.retryable and err.retry_after == 0.25
