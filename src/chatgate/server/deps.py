"""What a route needs from the running app, typed: the runtime (the gateway and its stores), the
gatekeeper, the request limits and the shutdown signal. All of it is built once, by ``create_app``."""

from __future__ import annotations

import asyncio

from starlette.requests import HTTPConnection

from chatgate.config import LimitsConfig
from chatgate.gateway.gateway import Gateway
from chatgate.runtime import Runtime
from chatgate.server.auth import Gatekeeper


def runtime_of(connection: HTTPConnection) -> Runtime:
    runtime: Runtime = connection.app.state.runtime
    return runtime


def gateway_of(connection: HTTPConnection) -> Gateway:
    return runtime_of(connection).gateway


def gate_of(connection: HTTPConnection) -> Gatekeeper:
    gate: Gatekeeper = connection.app.state.gate
    return gate


def limits_of(connection: HTTPConnection) -> LimitsConfig:
    limits: LimitsConfig = connection.app.state.limits
    return limits


def stopping_of(connection: HTTPConnection) -> asyncio.Event:
    """Set at the shutdown deadline (``server.connections.GracefulServer``): requests in flight end."""
    stopping: asyncio.Event = connection.app.state.stopping
    return stopping
