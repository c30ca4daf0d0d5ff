"""The one exception tree of chatgate.

Every error a client can see is a :class:`ChatgateError`. Each subclass fixes the HTTP status and
OpenAI's error ``type``; an instance carries the message, and optionally the offending ``param``
and a machine-readable ``code``. The HTTP layer renders them once, with :meth:`ChatgateError.body`,
as OpenAI does::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "temperature",
               "code": "decimal_above_max_value"}}

Code below the HTTP layer raises these and never builds error responses itself.

:class:`UpstreamError` is the provider-error taxonomy that several layers share: backends raise it
for anything an upstream provider answered with an error or failed to answer; the router reads its
``retryable``, ``retry_after`` and ``context_window`` to decide on retries and fallbacks. It lives
here, at the bottom, so that routing does not import it from the backends.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ChatgateError(Exception):
    """Base of all errors that reach a client."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI sends for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers that go with this error."""
        return {}


class InvalidRequestError(ChatgateError):
    """The request is malformed or asks for something impossible (400)."""

    status = 400
    type = "invalid_request_error"


class InvalidJSONError(InvalidRequestError):
    """The body is not valid JSON."""


class UnsupportedParameterError(InvalidRequestError):
    """A valid OpenAI parameter that this model does not support (yet)."""

    default_code = "unsupported_parameter"


class ContextLengthExceededError(InvalidRequestError):
    """The prompt (plus the requested completion) does not fit in the model's context."""

    default_code = "context_length_exceeded"


class AuthenticationError(ChatgateError):
    """Missing or invalid API key (401)."""

    status = 401
    type = "invalid_request_error"
    default_code: ClassVar[str | None] = "invalid_api_key"


class MissingKeyError(AuthenticationError):
    """No API key at all (401 with ``code: null``, as OpenAI answers)."""

    default_code = None


class PermissionDeniedError(ChatgateError):
    """The key may not use this resource (403)."""

    status = 403
    type = "invalid_request_error"


class NotFoundError(ChatgateError):
    """The addressed resource or route does not exist (404)."""

    status = 404
    type = "invalid_request_error"


class ModelNotFoundError(NotFoundError):
    """The requested model is not served here (404 ``model_not_found``)."""

    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )


class MethodNotAllowedError(ChatgateError):
    """The route exists but not with this HTTP method (405)."""

    status = 405
    type = "invalid_request_error"


class RateLimitError(ChatgateError):
    """Too many requests or tokens (429); ``extra_headers`` carry ``retry-after`` and the limits."""

    status = 429
    type = "requests"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, kind: str = "requests", extra_headers: dict[str, str] | None = None):
        super().__init__(message)
        self.type = kind  # type: ignore[misc]
        self.extra_headers = extra_headers or {}

    def headers(self) -> dict[str, str]:
        return dict(self.extra_headers)


class ConnectionLimitError(ChatgateError):
    """A request past a connection-level limit: answered, then the connection is closed (the rest of
    what the client sends is never read)."""

    type = "invalid_request_error"

    def headers(self) -> dict[str, str]:
        return {"connection": "close"}


class RequestTooLargeError(ConnectionLimitError):
    """The body is larger than the server takes (413)."""

    status = 413
    default_code = "request_too_large"


class RequestTimeoutError(ConnectionLimitError):
    """The request's headers or body came too slowly (408)."""

    status = 408
    default_code = "request_timeout"


class HeadersTooLargeError(ConnectionLimitError):
    """The request line and headers are larger, or more, than the server takes (431)."""

    status = 431
    default_code = "request_header_fields_too_large"


class OverloadedError(ChatgateError):
    """The server cannot take more work right now (503)."""

    status = 503
    type = "server_error"
    default_code = "overloaded"


class ShuttingDownError(ChatgateError):
    """The server is stopping and its shutdown deadline has passed (503); another replica can answer."""

    status = 503
    type = "server_error"
    default_code = "server_shutting_down"


class InternalError(ChatgateError):
    """A fault of ours; the message never carries internals (500)."""

    status = 500
    type = "server_error"


class InsufficientQuotaError(ChatgateError):
    """The key's budget cannot cover the request (429 ``insufficient_quota``); not worth retrying."""

    status = 429
    type = "insufficient_quota"
    default_code = "insufficient_quota"

    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false"}


RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
"""Upstream statuses another attempt (or another deployment) may answer differently."""


class UpstreamError(ChatgateError):
    """An upstream provider failed; ``status`` is what the client sees (OpenAI's mapping).

    ``retryable``: another attempt or a fallback may succeed (by default: the status is in
    :data:`RETRYABLE_STATUS`). ``retry_after``: the provider's hint, in seconds. ``context_window``:
    the prompt did not fit this model, so a fallback with a larger window may still answer.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str = "upstream_error",
        code: str | None = None,
        param: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        context_window: bool = False,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.status = status  # type: ignore[misc]  # per instance, unlike the class-level default
        self.type = type  # type: ignore[misc]
        self.retryable = status in RETRYABLE_STATUS if retryable is None else retryable
        self.retry_after = retry_after
        self.context_window = context_window

    def headers(self) -> dict[str, str]:
        if self.retry_after is not None and self.status == 429:
            return {"retry-after": str(max(1, round(self.retry_after)))}
        return {}
