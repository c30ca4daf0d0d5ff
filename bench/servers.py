"""Start the servers under comparison as subprocesses on loopback, and stop them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

PYTHON = sys.executable
BIN = Path(PYTHON).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running(cmd: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``cmd`` until the block ends; yield its base URL once ``/v1/models`` answers."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(600):
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} exited early; see {log}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/v1/models", timeout=2).status_code == 200:
                        break
                time.sleep(0.2)
            else:
                raise RuntimeError(f"{cmd[0]} did not start; see {log}")
            yield base
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def chatgate(port: int, threads: int, config: Path | None = None) -> list[str]:
    cmd = [str(BIN / "chatgate"), "serve", "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads)]
    return [*cmd, "--config", str(config)] if config else cmd


def llama_cpp_server(port: int, threads: int, model: Path, n_ctx: int) -> list[str]:
    return [
        PYTHON, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
        "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", str(n_ctx),
        "--interrupt_requests", "False",  # queue concurrent requests instead of cutting the running one off
    ]  # fmt: skip
