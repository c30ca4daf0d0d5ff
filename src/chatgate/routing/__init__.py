"""Model names to deployments: balancing, retries, cooldowns and fallbacks."""

from chatgate.routing.group import Deployment, ModelGroup
from chatgate.routing.router import Router

__all__ = ["Deployment", "ModelGroup", "Router"]
