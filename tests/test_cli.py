"""The installed ``chatgate`` command, run for real as a subprocess with the real embedded model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatgate.backends.local import embedded_model_path

CHATGATE = str(Path(sys.executable).parent / "chatgate")
DEFAULT_MODEL = "smollm2-135m-instruct"
POLL_SECONDS = 0.1
START_POLLS = 1200  # up to ~2 minutes for a slow machine to import and load the model
STOP_POLLS = 600
RUN_TIMEOUT = 300  # for commands that should finish on their own


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The test run's environment without any CHATGATE_* variable, and a private data dir."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHATGATE_")}
    clean["CHATGATE_DATA_DIR"] = str(tmp_path / "data")
    return clean


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def is_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run(args: list[str], env: dict[str, str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHATGATE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=RUN_TIMEOUT,
        check=False,
    )


class Server:
    """``chatgate serve`` in a subprocess; its output goes to files (a full pipe would block it)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.stdout_path = cwd / "serve.stdout"
        self.stderr_path = cwd / "serve.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen([CHATGATE, "serve", *args], stdout=out, stderr=err, env=env, cwd=cwd)

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def wait_healthy(self, port: int) -> httpx.Response:
        for _ in range(START_POLLS):
            if self.proc.poll() is not None:
                pytest.fail(f"chatgate serve exited with {self.proc.returncode} during start-up:\n{self.output()}")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).raise_for_status()
            except httpx.TransportError:
                time.sleep(POLL_SECONDS)
        pytest.fail(f"chatgate serve did not answer /health on port {port}:\n{self.output()}")

    def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        for _ in range(STOP_POLLS):
            code = self.proc.poll()
            if code is not None:
                return code
            time.sleep(POLL_SECONDS)
        pytest.fail(f"chatgate serve did not exit after {sig.name}:\n{self.output()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def serve(env: dict[str, str], tmp_path: Path) -> Iterator[list[Server]]:
    """Start servers with ``serve.append(Server(...))``; every one is killed at the end, whatever happens."""
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in started:
            server.kill()


# --- chatgate models ---------------------------------------------------------------------------


def test_models_lists_the_model_and_aliases(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["models"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{DEFAULT_MODEL}\t(embedded SmolLM2-135M-Instruct)"
    aliases = dict(line.split("\t-> ") for line in lines[1:])
    assert {"gpt-4", "gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo"} <= set(aliases)
    assert set(aliases.values()) == {DEFAULT_MODEL}
    assert result.stderr == ""


def test_models_with_a_config_file(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"aliases:\n  house-model: {DEFAULT_MODEL}\n")
    result = run(["models", "--config", str(config)], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [f"house-model\t-> {DEFAULT_MODEL}"]

    env["CHATGATE_CONFIG"] = str(config)  # the same file, named by the environment
    assert run(["models"], env, tmp_path).stdout == result.stdout


def test_models_with_model_flag(env: dict[str, str], tmp_path: Path) -> None:
    gguf = tmp_path / "Tiny-Chat.gguf"
    gguf.symlink_to(embedded_model_path())
    result = run(["models", "--model", str(gguf)], env, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"tiny-chat\t{gguf}"
    assert "gpt-4o\t-> tiny-chat" in lines[1:]


# --- chatgate serve ----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_answers_then_stops_cleanly(
    serve: list[Server], env: dict[str, str], tmp_path: Path, sig: signal.Signals
) -> None:
    port = free_port()
    server = Server(["--port", str(port), "--host", "127.0.0.1"], env, tmp_path)
    serve.append(server)

    health = server.wait_healthy(port).json()
    assert health["status"] == "ok"
    assert DEFAULT_MODEL in health["models"]
    assert "gpt-4o" in health["models"]

    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 5,
        "temperature": 0,
    }
    response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    completion = response.json()
    assert completion["object"] == "chat.completion"
    assert completion["model"] == DEFAULT_MODEL  # the model that really answered, not the alias
    choice = completion["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    assert 0 < completion["usage"]["completion_tokens"] <= 5

    assert server.stop(sig) == 0
    output = server.output()
    assert "Application shutdown complete" in output
    assert "Traceback" not in output
    assert (tmp_path / "data").is_dir()  # CHATGATE_DATA_DIR was created
    assert not is_listening(port)


def test_serve_flag_overrides_env(serve: list[Server], env: dict[str, str], tmp_path: Path) -> None:
    env_port, flag_port = free_port(), free_port()
    while flag_port == env_port:
        flag_port = free_port()
    env["CHATGATE_PORT"] = str(env_port)
    env["CHATGATE_HOST"] = "0.0.0.0"
    server = Server(["--port", str(flag_port), "--host", "127.0.0.1"], env, tmp_path)
    serve.append(server)

    server.wait_healthy(flag_port)
    assert not is_listening(env_port)
    assert f"serving on http://127.0.0.1:{flag_port}/v1" in server.output()
    assert server.stop(signal.SIGTERM) == 0


def test_serve_env_port_when_no_flag(serve: list[Server], env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env["CHATGATE_PORT"] = str(port)
    server = Server([], env, tmp_path)
    serve.append(server)
    server.wait_healthy(port)
    assert server.stop(signal.SIGINT) == 0


BAD_CONFIGS = {
    "invalid-yaml": "port: [1\n",
    "not-a-mapping": "- port: 1\n",
    "unknown-key": "prot: 9001\n",
    "dangling-alias": "aliases:\n  gpt-4o: nowhere\n",
    "bad-model-id": "models:\n  - id: org/model\naliases: {}\n",
}


@pytest.mark.parametrize("text", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_serve_with_bad_config_exits_2_with_one_line(env: dict[str, str], tmp_path: Path, text: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    port = free_port()
    result = run(["serve", "--config", str(config), "--port", str(port)], env, tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("chatgate: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert str(config) in result.stderr or "alias" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # it stopped before doing anything


@pytest.mark.parametrize(
    ("args", "extra_env", "expected"),
    [
        ([], {"CHATGATE_CONFIG": "missing.yaml"}, "cannot read config file missing.yaml"),
        (["--config", "missing.yaml"], {}, "cannot read config file missing.yaml"),
        ([], {"CHATGATE_PORT": "http"}, "port (from CHATGATE_PORT)"),
        ([], {"CHATGATE_LOG_LEVEL": "loud"}, "log_level (from CHATGATE_LOG_LEVEL)"),
        (["--threads", "0"], {}, "threads (from command line)"),
        (["--model", "missing.gguf"], {}, "model file not found: missing.gguf"),
    ],
    ids=["env-config-missing", "config-missing", "env-port", "env-log-level", "threads-flag", "model-missing"],
)
def test_serve_config_errors(
    env: dict[str, str], tmp_path: Path, args: list[str], extra_env: dict[str, str], expected: str
) -> None:
    result = run(["serve", *args], env | extra_env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("chatgate: ")
    assert expected in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_model_file_that_is_not_gguf_is_refused_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    fake = tmp_path / "notes.gguf"
    fake.write_text("not a model")
    result = run(["serve", "--model", str(fake)], env, tmp_path)
    assert result.returncode == 2
    assert "is not a GGUF file" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_bad_flag_is_a_usage_error(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["serve", "--port", "eighty"], env, tmp_path)
    assert result.returncode == 2
    assert "usage: chatgate serve" in result.stderr


def test_no_command_is_a_usage_error(env: dict[str, str], tmp_path: Path) -> None:
    result = run([], env, tmp_path)
    assert result.returncode == 2
    assert "usage: chatgate" in result.stderr


# --- chatgate chat -----------------------------------------------------------------------------


def test_chat_streams_a_reply_from_stdin(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["chat", "--temperature", "0"], env, tmp_path, stdin="Hello\n")
    assert result.returncode == 0, result.stderr
    assert f"chatting with {DEFAULT_MODEL}" in result.stderr
    assert "Traceback" not in result.stderr
    # stdout: the prompt, the streamed reply and its newline, the prompt again, then a newline at EOF.
    assert result.stdout.startswith("> ")
    assert result.stdout.endswith("> \n")
    reply = result.stdout.removeprefix("> ").removesuffix("> \n")
    assert reply.endswith("\n")
    assert reply.strip()


def test_chat_skips_blank_lines_and_keeps_the_conversation(env: dict[str, str], tmp_path: Path) -> None:
    result = run(
        ["chat", "--temperature", "0", "--system", "Answer in one short sentence."],
        env,
        tmp_path,
        stdin="\n   \nHi\nThanks\n",
    )
    assert result.returncode == 0, result.stderr
    prompts = result.stdout.split("> ")
    assert prompts[0] == ""
    assert prompts[-1] == "\n"  # EOF at the last prompt
    replies = [p for p in prompts[1:-1] if p]
    assert len(replies) == 2, result.stdout
    assert all(r.strip() for r in replies)


def test_chat_with_an_empty_stdin_exits_0(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["chat"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "> \n"


def test_chat_ctrl_c_at_the_prompt_exits_0(env: dict[str, str], tmp_path: Path) -> None:
    """SIGINT while waiting for a line (stdin open, nothing typed) ends the chat at once."""
    out_path = tmp_path / "chat.stdout"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            [CHATGATE, "chat"], stdin=subprocess.PIPE, stdout=out, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path
        )
    try:
        for _ in range(START_POLLS):
            if out_path.read_text() == "> " or proc.poll() is not None:
                break
            time.sleep(POLL_SECONDS)
        assert proc.poll() is None, "chat exited before prompting"
        assert out_path.read_text() == "> "
        proc.send_signal(signal.SIGINT)
        for _ in range(STOP_POLLS):
            if proc.poll() is not None:
                break
            time.sleep(POLL_SECONDS)
        assert proc.returncode == 0
        assert out_path.read_text() == "> \n"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stdin is not None
        proc.stdin.close()


@pytest.mark.parametrize(("use", "chosen"), [(None, "first"), ("second", "second"), ("pick-me", "second")])
def test_chat_use_picks_a_model(env: dict[str, str], tmp_path: Path, use: str | None, chosen: str) -> None:
    config = tmp_path / "two.yaml"  # two names for the embedded model
    config.write_text("models:\n  - id: first\n  - id: second\naliases:\n  pick-me: second\n")
    args = ["chat", "--config", str(config)] + (["--use", use] if use else [])
    result = run(args, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"chatting with {chosen};" in result.stderr


def test_chat_use_unknown_model_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["chat", "--use", "no-such-model"], env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("chatgate: --use no-such-model: no such model or alias")
    assert result.stderr.count("\n") == 1


def test_chat_reports_request_errors_and_goes_on(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["chat", "--temperature", "5"], env, tmp_path, stdin="Hello\n")
    assert result.returncode == 0, result.stderr
    assert "[error] Invalid 'temperature'" in result.stderr
    assert result.stdout == "> > \n"


def test_chat_with_a_file_that_is_not_a_model_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_text("not a model")
    result = run(["chat", "--model", str(fake)], env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("chatgate: llama.cpp could not load")
    assert "Traceback" not in result.stderr
