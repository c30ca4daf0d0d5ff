"""Connection limits and shutdown (issue 10, items 2 and 8a), against a real ``chatgate serve``:
slowloris and idle connections are closed, a connection over the cap is closed at once while the
others keep being served, oversized headers get a 431, and SIGTERM with an unbounded stream in
flight exits 0 once the shutdown deadline has passed."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.helpers import MASTER, admin_client
from tests.server.test_limits import ASK, CappedServer, assert_alive, serve_capped

HEADER_SECONDS = 1
MAX_CONNECTIONS = 400
HANG_GUARD = 60  # seconds; a generous bound on waits that should end within a few seconds
LIMITS = {
    "header_timeout_seconds": HEADER_SECONDS,
    "body_timeout_seconds": 2,
    "keep_alive_seconds": 1,
    "max_connections": MAX_CONNECTIONS,
    "shutdown_timeout_seconds": 5,
}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CappedServer, str]]:
    with serve_capped(tmp_path_factory.mktemp("guarded"), LIMITS) as served:
        yield served


@pytest.fixture
def api(guarded: tuple[CappedServer, str]) -> Iterator[httpx.Client]:
    with admin_client(guarded[1]) as c:
        yield c


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(HANG_GUARD)
    return sock


def _closed_by_server(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (raises on the hang guard)."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_slowloris_connections_get_a_408_and_are_closed(api: httpx.Client, guarded: tuple[CappedServer, str]) -> None:
    port = _port(guarded[1])
    socks = [_connect(port) for _ in range(300)]
    stop = threading.Event()

    def trickle() -> None:  # one more header byte on every connection, every 0.2 s
        while not stop.wait(0.2):
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.sendall(b"x")

    for sock in socks:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-slow: ")
    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    try:
        assert api.get("/health").status_code == 200  # served meanwhile
        answers = [_closed_by_server(sock) for sock in socks]
    finally:
        stop.set()
        feeder.join()
        for sock in socks:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 408 ") and b'"code": "request_timeout"' in a for a in answers)
    assert_alive(api, guarded[0])


def test_a_slow_body_gets_a_408(api: httpx.Client, guarded: tuple[CappedServer, str]) -> None:
    with _connect(_port(guarded[1])) as sock:
        auth = f"authorization: Bearer {MASTER}\r\n".encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n" + auth + b"content-length: 100\r\n\r\n{")
        assert _closed_by_server(sock).startswith(b"HTTP/1.1 408 ")
    assert_alive(api, guarded[0])


def test_connections_over_the_cap_are_closed_at_once_and_the_others_served(
    api: httpx.Client, guarded: tuple[CappedServer, str]
) -> None:
    assert api.get("/health").status_code == 200  # this keep-alive connection is open before the flood
    port = _port(guarded[1])
    socks = [_connect(port) for _ in range(MAX_CONNECTIONS + 100)]
    try:
        for sock in socks[MAX_CONNECTIONS:]:
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        answers = [_closed_by_server(sock) for sock in socks[MAX_CONNECTIONS:]]
        assert api.get("/health").status_code == 200  # the connection made before the flood is served
        assert all(a == b"" for a in answers)  # over the cap: closed without reading a byte
        # those within the cap, idle, are closed by the header deadline; then new clients get in again
        assert all(_closed_by_server(sock).startswith(b"HTTP/1.1 408 ") for sock in socks[: MAX_CONNECTIONS - 1])
    finally:
        for sock in socks:
            sock.close()
    assert_alive(api, guarded[0])


def test_oversized_headers_get_a_431(api: httpx.Client, guarded: tuple[CappedServer, str]) -> None:
    port = _port(guarded[1])
    for headers in (b"x-big: " + b"a" * 20_000 + b"\r\n", b"".join(b"x-h%d: v\r\n" % i for i in range(200))):
        with _connect(port) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n" + headers + b"\r\n")
            answer = _closed_by_server(sock)
        assert answer.startswith(b"HTTP/1.1 431 ") and b"request_header_fields_too_large" in answer
    assert_alive(api, guarded[0])


def test_an_idle_keep_alive_connection_is_closed(api: httpx.Client, guarded: tuple[CappedServer, str]) -> None:
    with _connect(_port(guarded[1])) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = _closed_by_server(sock)  # answered, then closed after keep_alive_seconds of silence
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1") == 1
    assert_alive(api, guarded[0])


def test_sigterm_lets_short_requests_finish_and_cancels_an_unbounded_stream(tmp_path: Path) -> None:
    with serve_capped(tmp_path, LIMITS) as (server, url):
        with admin_client(url, timeout=HANG_GUARD) as http:
            no_end = {"0": -100, "2": -100}  # SmolLM2's <|endoftext|> and <|im_end|>: on until the context is full
            endless = {"model": "gpt-4", "messages": ASK, "stream": True, "logit_bias": no_end}
            short = {"model": "gpt-4", "messages": ASK, "stream": True, "max_tokens": 8}
            with (
                http.stream("POST", "/v1/chat/completions", json=endless) as unbounded,
                http.stream("POST", "/v1/chat/completions", json=short) as bounded,
            ):
                unbounded_lines, bounded_lines = unbounded.iter_lines(), bounded.iter_lines()
                assert next(unbounded_lines).startswith("data: ") and next(bounded_lines).startswith("data: ")
                server.proc.send_signal(signal.SIGTERM)
                assert "data: [DONE]" in list(bounded_lines)  # finished within the deadline
                rest = [line for line in unbounded_lines if line]  # ended at the deadline, as a failed stream ends
        code = server.proc.wait(timeout=HANG_GUARD)  # (a second SIGTERM would force the exit)
    out = server.output()
    assert code == 0, out[-3000:]
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[-2].removeprefix("data: "))["error"]["code"] == "server_shutting_down"
    assert "Application shutdown complete" in out and "timeout graceful shutdown exceeded" not in out
    assert "Traceback" not in out
