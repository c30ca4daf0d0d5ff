"""Run the real chatgate app under uvicorn on a random loopback port, in a background thread."""

from __future__ import annotations

from chatgate.config import Settings
from chatgate.server.app import create_app
from tests.fakes.server import FakeServer


class ServerThread(FakeServer):
    """The real server, real sockets: ``base_url`` is where the official SDK points."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(create_app(settings), lifespan="on")

    @property
    def base_url(self) -> str:
        return self.url

    def start(self) -> ServerThread:
        super().start()
        return self
