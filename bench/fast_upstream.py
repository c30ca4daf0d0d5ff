"""A fake OpenAI upstream made to cost as little CPU as Python allows, for the proxy benchmark.

    python bench/fast_upstream.py --port 9000

``POST /v1/chat/completions`` (any body) is answered with one fixed, non-streamed chat completion
(a short reply and its usage); ``GET /v1/models`` lists the model ``fake``. There is no framework: a
raw :class:`asyncio.Protocol` speaks just enough HTTP/1.1 (keep-alive, ``Content-Length`` bodies,
pipelined requests) and writes pre-built response bytes, on uvloop when it is installed. Anything
else gets a 404; a malformed request closes the connection. It serves loopback only by default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import cast

COMPLETION = {
    "id": "chatcmpl-fake",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "fake",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18},
}
MODELS = {"object": "list", "data": [{"id": "fake", "object": "model", "created": 1_700_000_000, "owned_by": "bench"}]}
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024


def _response(status: str, payload: object) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


OK_COMPLETION = _response("200 OK", COMPLETION)
OK_MODELS = _response("200 OK", MODELS)
NOT_FOUND = _response("404 Not Found", {"error": {"message": "not found", "type": "invalid_request_error"}})


class FakeOpenAI(asyncio.Protocol):
    """One connection: parse each request's head, skip its body, write the canned answer."""

    __slots__ = ("buffer", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        out: list[bytes] = []
        close = False
        while buffer:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    close = True
                    buffer = b""
                break
            head = buffer[:end].lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 17)
                try:
                    length = int(head[at + 17 : stop if stop >= 0 else None])
                except ValueError:
                    close, buffer = True, b""
                    break
            if length < 0 or length > MAX_BODY or b"\r\ntransfer-encoding:" in head:
                close, buffer = True, b""  # chunked request bodies are not needed here
                break
            total = end + 4 + length
            if len(buffer) < total:
                break
            if head.startswith(b"post /v1/chat/completions"):
                out.append(OK_COMPLETION)
            elif head.startswith(b"get /v1/models"):
                out.append(OK_MODELS)
            else:
                out.append(NOT_FOUND)
            if b"\r\nconnection: close" in head or head.partition(b"\r\n")[0].endswith(b"http/1.0"):
                close, buffer = True, b""
                break
            buffer = buffer[total:]
        self.buffer = buffer
        transport = self.transport
        if transport is None:
            return
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if close:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FakeOpenAI, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    flavour = type(loop).__module__.split(".")[0]
    print(f"fake OpenAI upstream on http://{host}:{port}/v1 ({flavour} event loop)", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
