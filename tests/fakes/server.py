"""Run any ASGI app as a real HTTP server on a random loopback port, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Literal

import uvicorn


class FakeServer:
    def __init__(self, app: Any, *, lifespan: Literal["on", "off"] = "off", **options: Any) -> None:
        """``options``: more ``uvicorn.Config`` arguments (the real server's connection limits)."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        options = {"timeout_graceful_shutdown": 1, **options}
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan=lifespan, **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeServer:
        self.thread.start()
        for _ in range(600):  # start-up (a model load included) takes well under a second; allow a slow machine
            if self.server.started:
                return self
            if not self.thread.is_alive():
                raise RuntimeError("the server thread died during start-up")
            time.sleep(0.05)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.sock.close()
