"""Upstream failures as :class:`~chatgate.errors.UpstreamError`: one mapper for every provider.

:func:`map_error` turns an upstream HTTP error (status, JSON body, headers) into what the client
sees, in OpenAI's statuses, types and codes; :func:`map_event_error` does the same for an error
event inside a stream that had answered 200. Each wire format's differences are data in an
:class:`ErrorDialect` (:data:`OPENAI`, :data:`ANTHROPIC`, :data:`GEMINI`), not code of its own.

Every string taken from an upstream body (message, type, code) passes :func:`redact` with the
deployment's own key before it can reach a client: a provider may echo the key it was sent.
The other constructors here (connection failures, refused credentials, malformed answers, cut
streams) carry no upstream text at all.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx

from chatgate.errors import UpstreamError

CONTEXT_CODE = "context_length_exceeded"
"""OpenAI's code for a prompt that does not fit the model; every provider's own form maps to it."""


@dataclass(frozen=True)
class Fixed:
    """What one upstream status always becomes for the client, whatever its body says."""

    status: int
    type: str
    code: str
    retryable: bool | None = None
    """``None``: by the client-facing status."""


@dataclass(frozen=True)
class ErrorDialect:
    """How one wire format writes its errors (the body is ``{"error": {...}}`` for all of them)."""

    openai_vocabulary: bool = False
    """Its ``type`` and ``code`` are OpenAI's own and pass through; otherwise the provider's ``type``
    (or gRPC ``status``), lowercased, is the ``code`` and the type is OpenAI's for the status."""
    fixed: Mapping[int, Fixed] = field(default_factory=dict)
    """Statuses answered the same way whatever the body (Anthropic's 529 overloaded, say)."""
    server_errors_retryable: bool = False
    """Every 5xx is worth another attempt (not only those in RETRYABLE_STATUS)."""
    context_codes: frozenset[str] = frozenset()
    context_types: frozenset[str] = frozenset()
    context_forms: tuple[str, ...] = ()
    """How a 400 says the prompt does not fit, for providers with no code or type for it: phrases of
    the message, as the provider writes them."""
    event_statuses: Mapping[str, int] = field(default_factory=dict)
    """An error event's HTTP status by its ``type`` (or ``status``), when it carries no numeric code."""
    auth_reasons: frozenset[str] = frozenset()
    """``google.rpc.ErrorInfo`` reasons of a 400 that is really chatgate's credentials refused."""
    retry_info: bool = False
    """The body may carry a ``google.rpc.RetryInfo`` delay (used when no retry-after header does)."""


OPENAI = ErrorDialect(
    openai_vocabulary=True,
    context_codes=frozenset({CONTEXT_CODE}),
    context_types=frozenset({"exceed_context_size_error"}),  # llama.cpp's llama-server
    context_forms=("maximum context length is",),  # vLLM (no code), as OpenAI's own message
)
ANTHROPIC = ErrorDialect(
    fixed={
        429: Fixed(429, "requests", "rate_limit_exceeded"),
        529: Fixed(503, "server_error", "overloaded", retryable=True),
        413: Fixed(400, "invalid_request_error", "request_too_large", retryable=False),
    },
    context_forms=("prompt is too long", "input length and `max_tokens` exceed context limit"),
    event_statuses={
        "invalid_request_error": 400,
        "authentication_error": 401,
        "permission_error": 403,
        "not_found_error": 404,
        "request_too_large": 413,
        "rate_limit_error": 429,
        "api_error": 500,
        "overloaded_error": 529,
    },
)
GEMINI = ErrorDialect(
    fixed={429: Fixed(429, "requests", "rate_limit_exceeded", retryable=True)},
    server_errors_retryable=True,
    context_forms=("exceeds the maximum number of tokens allowed",),
    event_statuses={
        "INVALID_ARGUMENT": 400,
        "FAILED_PRECONDITION": 400,
        "UNAUTHENTICATED": 401,
        "PERMISSION_DENIED": 403,
        "NOT_FOUND": 404,
        "RESOURCE_EXHAUSTED": 429,
        "INTERNAL": 500,
        "UNAVAILABLE": 503,
        "DEADLINE_EXCEEDED": 504,
    },
    auth_reasons=frozenset({"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED"}),
    retry_info=True,
)


@dataclass(frozen=True)
class _Said:
    """What an error body says, as the provider wrote it (not yet redacted)."""

    message: str | None = None
    kind: str | None = None
    """``type``, or Gemini's gRPC ``status``."""
    code: str | None = None

    @classmethod
    def of(cls, body: Any) -> _Said:
        error = body.get("error", body) if isinstance(body, dict) else None
        if isinstance(error, str):
            return cls(message=error)
        if not isinstance(error, dict):
            return cls()
        return cls(
            _text(error.get("message")), _text(error.get("type") or error.get("status")), _text(error.get("code"))
        )


def map_error(
    status: int, body: Any, headers: Mapping[str, str], provider: str, api_key: str | None, *, dialect: ErrorDialect
) -> UpstreamError:
    """An upstream error response as the client should see it; ``api_key`` (the deployment's own
    key, which the provider may echo) is masked in everything taken from the body."""
    said = _Said.of(body)
    message = redact(said.message or f"The upstream provider '{provider}' answered {status}.", api_key)
    if status in (401, 403) or _refused_credentials(body, dialect):
        return auth_rejected(provider, status)
    wait = retry_after(headers)
    if wait is None and dialect.retry_info:
        wait = _retry_delay(body)
    fixed = dialect.fixed.get(status)
    if fixed is not None:
        return UpstreamError(message, status=fixed.status, type=fixed.type, code=fixed.code,
                             retryable=fixed.retryable, retry_after=wait)  # fmt: skip
    type_, code = _vocabulary(said, dialect, api_key)
    if status == 429:
        return UpstreamError(message, status=429, type=type_ or "requests", code=code or "rate_limit_exceeded",
                             retry_after=wait)  # fmt: skip
    if status >= 500:
        return UpstreamError(message, status=status, type=type_ or "server_error", code=code, retry_after=wait,
                             retryable=True if dialect.server_errors_retryable else None)  # fmt: skip
    if _context_window(status, said, dialect):
        return UpstreamError(message, status=status, type="invalid_request_error", code=CONTEXT_CODE,
                             retryable=False, context_window=True)  # fmt: skip
    return UpstreamError(message, status=status, type=type_ or "invalid_request_error", code=code,
                         retryable=status in (408, 409))  # fmt: skip


def map_event_error(event: Any, provider: str, api_key: str | None, *, dialect: ErrorDialect) -> UpstreamError:
    """An ``error`` event inside a stream that answered 200, mapped as the HTTP error it stands for:
    its numeric ``code`` if it has one, else its type's status, else a 502."""
    error = event.get("error") if isinstance(event, dict) else None
    status = 502
    if isinstance(error, dict):
        code, kind = error.get("code"), str(error.get("type") or error.get("status"))
        if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
            status = code
        else:
            status = dialect.event_statuses.get(kind, 502)
    return map_error(status, event, {}, provider, api_key, dialect=dialect)


def _vocabulary(said: _Said, dialect: ErrorDialect, api_key: str | None) -> tuple[str | None, str | None]:
    """(type, code) for the client: OpenAI's own pass through; another provider's type is the code."""
    if dialect.openai_vocabulary:
        return _redacted(said.kind, api_key), _redacted(said.code, api_key)
    return None, _redacted(said.kind.lower() if said.kind else None, api_key)


def _refused_credentials(body: Any, dialect: ErrorDialect) -> bool:
    """A status other than 401/403 that still means chatgate's key was refused (Gemini's 400)."""
    reason = _details(body, "ErrorInfo", "reason") if dialect.auth_reasons else None
    return isinstance(reason, str) and reason in dialect.auth_reasons


def _context_window(status: int, said: _Said, dialect: ErrorDialect) -> bool:
    if said.code in dialect.context_codes or said.kind in dialect.context_types:
        return True
    return status == 400 and any(form in (said.message or "") for form in dialect.context_forms)


def _details(body: Any, kind: str, key: str) -> Any:
    """``key`` of the first ``google.rpc.<kind>`` entry of the error's ``details``."""
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith(f"google.rpc.{kind}"):
            return detail.get(key)
    return None


def _retry_delay(body: Any) -> float | None:
    """``RetryInfo.retryDelay`` (a protobuf Duration such as ``"31s"``) in seconds."""
    delay = _details(body, "RetryInfo", "retryDelay")
    try:
        return max(0.0, float(delay.removesuffix("s"))) if isinstance(delay, str) else None
    except ValueError:
        return None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
    except (ValueError, TypeError):  # neither seconds nor an HTTP date: no hint
        return None
    return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def redact(message: str, secret: str | None) -> str:
    """``message`` with ``secret`` (an upstream key a provider may echo) masked."""
    return message.replace(secret, "[redacted]") if secret else message


def _redacted(value: str | None, secret: str | None) -> str | None:
    return None if value is None else redact(value, secret)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# --- failures that carry no upstream text ----------------------------------------------------------


def connection_error(exc: BaseException, provider: str) -> UpstreamError:
    """A transport failure (refused, reset, timed out) as a retryable 502/504."""
    if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamError(f"The upstream provider '{provider}' timed out.", status=504, type="timeout",
                             code="upstream_timeout", retryable=True)  # fmt: skip
    return UpstreamError(f"Could not reach the upstream provider '{provider}'.", status=502,
                         type="upstream_error", code="upstream_unreachable", retryable=True)  # fmt: skip


def auth_rejected(provider: str, status: int) -> UpstreamError:
    """The provider refused chatgate's own credentials: a final 502, never blamed on the client's key."""
    return UpstreamError(f"The upstream provider '{provider}' rejected chatgate's credentials ({status}).",
                         status=502, type="upstream_auth_error", code="upstream_auth_failed",
                         retryable=False)  # fmt: skip


def malformed(provider: str) -> UpstreamError:
    """An answer that is not the provider's wire format; another attempt may get a good one."""
    return UpstreamError(f"The upstream provider '{provider}' sent a malformed response.", status=502,
                         code="upstream_malformed_response", retryable=True)  # fmt: skip


def stream_cut(provider: str, *, retryable: bool) -> UpstreamError:
    """The stream ended before its end; retryable only while no chunk has gone out."""
    return UpstreamError(f"The upstream provider '{provider}' ended the stream early.", status=502,
                         code="upstream_stream_cut", retryable=retryable)  # fmt: skip
