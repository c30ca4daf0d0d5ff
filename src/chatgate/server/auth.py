"""Who is calling: ``Authorization: Bearer <key>`` against the master key and the virtual keys.

Without a master key the server is open (allowed only on loopback, see ``config.check_exposure``).
With one, every API route needs a key: the master key, or a live virtual key from the store.
Keys are compared in constant time and never appear in a log line or an error message.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.requests import Request

from chatgate.errors import AuthenticationError, MissingKeyError, PermissionDeniedError
from chatgate.gateway.keys import KeyRecord, KeyStore
from chatgate.server.middleware import exchange_of

MISSING = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: the admin (master key), a virtual key, or anyone (open mode)."""

    key: KeyRecord | None = None
    admin: bool = False

    def allows(self, model: str) -> bool:
        return self.key is None or self.key.allows(model)


OPEN = Caller(admin=True)


@dataclass
class Gatekeeper:
    master_key: str | None
    keys: KeyStore | None

    @property
    def open(self) -> bool:
        return self.master_key is None

    async def caller(self, request: Request, *, x_api_key: bool = False) -> Caller:
        """``x_api_key``: Anthropic's ``x-api-key`` header is accepted too, and wins over ``Authorization``."""
        if self.master_key is None:
            return OPEN
        given = (_x_api_key(request) if x_api_key else None) or _bearer(request)
        if given is None:
            raise MissingKeyError(MISSING)
        if hmac.compare_digest(given.encode(), self.master_key.encode()):
            return Caller(admin=True)
        if self.keys is None:  # pragma: no cover - a master key always comes with a store
            raise AuthenticationError("Incorrect API key provided.", code="invalid_api_key")
        return Caller(key=await self.keys.authenticate(given))

    async def admin(self, request: Request) -> Caller:
        caller = await self.caller(request)
        if self.open:
            raise PermissionDeniedError(
                "The admin API needs a master key: set CHATGATE_MASTER_KEY.", code="admin_disabled"
            )
        if not caller.admin:
            raise PermissionDeniedError("This route needs the master key.", code="insufficient_permissions")
        return caller


async def identify(request: Request, *, x_api_key: bool = False) -> Caller:
    """The caller of ``request`` (401 when it may not call at all); its key's grant goes on the exchange.
    ``x_api_key``: the key may come in Anthropic's ``x-api-key`` header (the Messages API)."""
    gate: Gatekeeper = request.app.state.gate
    caller = await gate.caller(request, x_api_key=x_api_key)
    if caller.key is not None:
        exchange_of(request).grant = caller.key.grant
    return caller


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _x_api_key(request: Request) -> str | None:
    return request.headers.get("x-api-key", "").strip() or None
