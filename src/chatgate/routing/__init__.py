"""Model names to backends."""

from chatgate.routing.router import Router

__all__ = ["Router"]
