"""The HTTP edge: routes, SSE, errors, request ids."""

from chatgate.server.app import create_app

__all__ = ["create_app"]
