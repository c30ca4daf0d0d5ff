"""Run the real chatgate app under uvicorn on a random loopback port, in a background thread; and
context managers that always stop what they start, a failed start or a failing test included."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import TypeVar

from chatgate.config import Settings
from chatgate.server.app import create_app
from chatgate.server.connections import uvicorn_options
from tests.fakes.server import FakeServer

S = TypeVar("S", bound=FakeServer)


class ServerThread(FakeServer):
    """The real server, real sockets: ``base_url`` is where the official SDK points."""

    def __init__(self, settings: Settings) -> None:
        # the connection limits of `chatgate serve`, with a short shutdown so that a session ends quickly
        options = {**uvicorn_options(settings.limits), "timeout_graceful_shutdown": 1}
        super().__init__(create_app(settings), lifespan="on", **options)

    @property
    def base_url(self) -> str:
        return self.url

    def start(self) -> ServerThread:
        super().start()
        return self


@contextmanager
def running(server: S) -> Iterator[S]:
    """``server`` started, and stopped on leaving the block whatever happened in it."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def all_running(servers: Iterable[S]) -> Iterator[list[S]]:
    """Each of ``servers`` started in turn; every one started is stopped on leaving (the last first)."""
    with ExitStack() as stack:
        yield [stack.enter_context(running(server)) for server in servers]


def serve(settings: Settings) -> AbstractContextManager[ServerThread]:
    """A real chatgate server from ``settings``, for a block: ``with serve(settings) as server: ...``.
    Use it twice in a row to restart a server on the same data directory."""
    return running(ServerThread(settings))
