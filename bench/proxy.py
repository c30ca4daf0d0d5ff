"""The proxy path: chatgate and LiteLLM's proxy in front of the same fast fake upstream, side by side.

    .venv/bin/python bench/proxy.py          # --duration 10 --warmup 3 --levels 1,16

One run on loopback: a fake OpenAI upstream (bench/fast_upstream.py, a raw asyncio server), chatgate
in front of it (an upstream model ``fake``), and LiteLLM's proxy in front of it (litellm[proxy] in
its own virtual environment, bench/.venv-litellm, created on the first run; one worker). wrk sends
the same small non-streamed chat completion to each of the three at each concurrency for a fixed
time after a warm-up, and the script prints requests/s, p50 and p99 latency for each, chatgate /
LiteLLM ratios and the latency chatgate adds to the upstream alone. The report is also written to
--out. Every process it starts is stopped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import BIN, free_port

HERE = Path(__file__).resolve().parent
LITELLM_REQUIREMENT = "litellm[proxy]==1.100.0"
LITELLM_VENV = HERE / ".venv-litellm"
LITELLM_STAMP = LITELLM_VENV / ".bench-installed"
API_KEY = "sk-x"
BODY = {"model": "fake", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16}
REPLY = "Hello! How can I help you today?"  # what bench/fast_upstream.py answers

# wrk: POST the body on every request; at the end print one JSON line with the counts and percentiles.
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [[%(body)s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "mean_us": %%.1f, ' ..
    '"errors": %%d, "non_2xx": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""

# LiteLLM's proxy runs uvicorn with an access log line per request at INFO: keep it at WARNING, as chatgate's.
LITELLM_LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        "uvicorn.error": {"level": "WARNING"},
        "uvicorn.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}


@dataclass
class Load:
    """One wrk run against one target at one concurrency."""

    target: str
    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: int
    non_2xx: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


# --- setup ------------------------------------------------------------------------------------------


def ensure_litellm() -> Path:
    """bench/.venv-litellm with litellm[proxy] pinned, created once and reused; its ``litellm`` command."""
    litellm = LITELLM_VENV / "bin" / "litellm"
    if litellm.exists() and LITELLM_STAMP.exists() and LITELLM_STAMP.read_text().strip() == LITELLM_REQUIREMENT:
        print(f"LiteLLM: reusing {display(LITELLM_VENV)} ({LITELLM_REQUIREMENT})", flush=True)
        return litellm
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        print(f"LiteLLM: creating the virtual environment {LITELLM_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    print(f"LiteLLM: pip install '{LITELLM_REQUIREMENT}' into it (first run only; a few minutes) ...", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "on",
                    LITELLM_REQUIREMENT], check=True)  # fmt: skip
    LITELLM_STAMP.write_text(LITELLM_REQUIREMENT + "\n")
    print("LiteLLM: installed", flush=True)
    return litellm


def find_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit(
            "bench/proxy.py needs the HTTP load generator wrk, which is not installed.\n"
            "On Debian or Ubuntu: sudo apt-get update && sudo apt-get install -y wrk\n"
            "On macOS: brew install wrk"
        )
    return wrk


def upstream_python() -> tuple[str, str]:
    """The interpreter to run the fake upstream with: one that has uvloop if there is one (the LiteLLM
    venv's usually does), since it roughly halves the upstream's own latency."""
    candidates = [sys.executable, str(LITELLM_VENV / "bin" / "python")]
    for python in candidates:
        found = subprocess.run([python, "-c", "import uvloop"], capture_output=True, check=False)
        if found.returncode == 0:
            return python, "uvloop"
    return sys.executable, "asyncio"


# --- processes --------------------------------------------------------------------------------------


@contextlib.contextmanager
def started(
    name: str,
    cmd: list[str],
    port: int,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    probe: str = "/v1/models",
) -> Iterator[str]:
    """Run ``cmd`` in its own process group until the block ends; yield its base URL once
    ``GET probe`` answers 200. The whole group is stopped on the way out, whatever happens."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                cwd=cwd, start_new_session=True)  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited early (code {proc.returncode}); see {log}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}{probe}", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start within 180 s; see {log}")
                time.sleep(0.2)
            print(f"  {name} ready on {base} (log: {log})", flush=True)
            yield base
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT to the process group (a graceful stop), SIGKILL if it is still there 20 s later."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the leader is gone or stuck; anything left in its group goes too
    proc.wait()


def display(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (as the commands are usually typed)."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(HERE.parent))
    return str(path)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwind, so that every started process is stopped


# --- load -------------------------------------------------------------------------------------------


def check(target: str, base: str, key: str = API_KEY) -> None:
    """One request by hand: the answer must be the upstream's reply, or the numbers mean nothing."""
    response = httpx.post(f"{base}/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"},
                          timeout=30)  # fmt: skip
    if response.status_code != 200 or response.json()["choices"][0]["message"]["content"] != REPLY:
        raise RuntimeError(f"{target} answered {response.status_code}: {response.text[:300]}")


def wrk(binary: str, script: Path, target: str, base: str, concurrency: int, seconds: int) -> Load:
    cmd = [binary, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
           f"{base}/v1/chat/completions"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH-JSON ")]
    if not lines:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    data = json.loads(lines[-1].removeprefix("BENCH-JSON "))
    return Load(target=target, concurrency=concurrency, requests=data["requests"], seconds=data["duration_us"] / 1e6,
                p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, mean_ms=data["mean_us"] / 1000,
                errors=data["errors"], non_2xx=data["non_2xx"])  # fmt: skip


# --- report -----------------------------------------------------------------------------------------


def report(results: dict[tuple[str, int], Load], levels: list[int], args: argparse.Namespace, notes: list[str]) -> str:
    targets = ["upstream alone", "chatgate", "LiteLLM"]
    lines = [
        f"# chatgate proxy path vs LiteLLM, {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        f"`{' '.join(['.venv/bin/python', 'bench/proxy.py', *sys.argv[1:]])}`: non-streamed chat completions, "
        f"{args.duration} s per target and concurrency after a {args.warmup} s warm-up, wrk, loopback.",
        "",
        "| target | concurrency | requests/s | p50 | p99 | errors |",
        "|---|---|---|---|---|---|",
    ]
    for c in levels:
        for t in targets:
            r = results[t, c]
            lines.append(f"| {t} | {c} | {r.rps:,.0f} | {r.p50_ms:.2f} ms | {r.p99_ms:.2f} ms | "
                         f"{r.errors + r.non_2xx} |")  # fmt: skip
    lines += [
        "",
        "| concurrency | requests/s, chatgate / LiteLLM | p50, LiteLLM / chatgate | chatgate's added p50 | "
        "LiteLLM's added p50 |",
        "|---|---|---|---|---|",
    ]
    for c in levels:
        up, cg, ll = results["upstream alone", c], results["chatgate", c], results["LiteLLM", c]
        lines.append(
            f"| {c} | {cg.rps / ll.rps:.2f}x | {ll.p50_ms / cg.p50_ms:.2f}x | {cg.p50_ms - up.p50_ms:.2f} ms | "
            f"{ll.p50_ms - up.p50_ms:.2f} ms |"
        )
    hi, lo = max(levels), min(levels)
    ratio = results["chatgate", hi].rps / results["LiteLLM", hi].rps
    added = results["chatgate", lo].p50_ms - results["upstream alone", lo].p50_ms
    lines += [
        "",
        f"- requests/s at concurrency {hi}, chatgate / LiteLLM: {ratio:.2f}x (goal ≥ 10x: "
        f"{'met' if ratio >= 10 else 'not met'})",
        f"- chatgate's added p50 latency at concurrency {lo}: {added:.2f} ms (goal ≤ 1 ms: "
        f"{'met' if added <= 1 else 'not met'})",
        *[f"- {note}" for note in notes],
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per target and concurrency")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load per target before measuring (0: none)")
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "proxy-latest.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)

    wrk_bin = find_wrk()
    litellm = ensure_litellm()
    python, loop = upstream_python()
    tmp = Path(tempfile.mkdtemp(prefix="chatgate-proxy-bench-"))
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT % {"body": json.dumps(BODY), "key": API_KEY})
    ports = {"upstream": free_port(), "chatgate": free_port(), "litellm": free_port()}
    upstream_v1 = f"http://127.0.0.1:{ports['upstream']}/v1"

    chatgate_config = tmp / "chatgate.yaml"
    chatgate_config.write_text(
        json.dumps(  # JSON is YAML
            {
                "log_level": "warning",
                "data_dir": str(tmp / "data"),
                "models": [],
                "aliases": {},
                "providers": {"fake": {"base_url": upstream_v1, "api_key": API_KEY}},
                "upstream_models": [{"name": "fake", "deployments": [{"provider": "fake", "model": "fake"}]}],
            },
            indent=2,
        )
    )
    litellm_config = tmp / "litellm.yaml"
    litellm_config.write_text(json.dumps({"model_list": [
        {"model_name": "fake", "litellm_params": {"model": "openai/fake", "api_base": upstream_v1, "api_key": API_KEY}}
    ]}, indent=2))  # fmt: skip
    litellm_log_config = tmp / "litellm-logging.json"
    litellm_log_config.write_text(json.dumps(LITELLM_LOG_CONFIG))

    notes = [
        f"upstream: bench/fast_upstream.py on the {loop} event loop; chatgate ({display(BIN / 'chatgate')}) with "
        "`log_level: warning` (no per-request log line) and LiteLLM with uvicorn's access log and "
        "LITELLM_LOG at WARNING, so that logging is not what is measured",
        f"LiteLLM: {LITELLM_REQUIREMENT}, one worker (`--num_workers 1`), its bundled model cost map "
        "(LITELLM_LOCAL_MODEL_COST_MAP: nothing fetched at start-up), otherwise its defaults (no database)",
        "wrk, one thread, keep-alive connections; the load generator, the proxy under test and the upstream share "
        f"the machine's {os.cpu_count()} cores, nothing pinned",
    ]
    results: dict[tuple[str, int], Load] = {}
    with contextlib.ExitStack() as stack:
        print("starting the upstream, chatgate and LiteLLM's proxy ...", flush=True)
        bases = {
            "upstream alone": stack.enter_context(started(
                "fake upstream", [python, str(HERE / "fast_upstream.py"), "--port", str(ports["upstream"])],
                ports["upstream"], tmp / "upstream.log")),
            "chatgate": stack.enter_context(started(
                "chatgate", [str(BIN / "chatgate"), "serve", "--config", str(chatgate_config), "--host", "127.0.0.1",
                             "--port", str(ports["chatgate"])],
                ports["chatgate"], tmp / "chatgate.log")),
            "LiteLLM": stack.enter_context(started(
                "LiteLLM proxy", [str(litellm), "--config", str(litellm_config), "--host", "127.0.0.1", "--port",
                                  str(ports["litellm"]), "--num_workers", "1", "--telemetry", "False",
                                  "--log_config", str(litellm_log_config)],
                ports["litellm"], tmp / "litellm.log", cwd=tmp,
                env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "WARNING"})),
        }  # fmt: skip
        for target, base in bases.items():
            check(target, base)
        if args.warmup > 0:
            print(f"warm-up: {args.warmup} s per target at concurrency {max(args.levels)} ...", flush=True)
            for target, base in bases.items():
                wrk(wrk_bin, script, target, base, max(args.levels), args.warmup)
        for c in args.levels:
            for target, base in bases.items():
                r = wrk(wrk_bin, script, target, base, c, args.duration)
                results[target, c] = r
                print(f"  {target:>14}, concurrency {c:>2}: {r.rps:8,.0f} req/s  p50 {r.p50_ms:7.2f} ms  "
                      f"p99 {r.p99_ms:7.2f} ms  errors {r.errors + r.non_2xx}", flush=True)  # fmt: skip
        print("stopping ...", flush=True)

    text = report(results, args.levels, args, notes)
    print()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}; logs in {tmp}")


if __name__ == "__main__":
    main()
