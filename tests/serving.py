"""Run the real chatgate app under uvicorn on a random loopback port, in a background thread."""

from __future__ import annotations

from chatgate.config import Settings
from chatgate.server.app import create_app
from chatgate.server.connections import uvicorn_options
from tests.fakes.server import FakeServer


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
