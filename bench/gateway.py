"""The gateway's cost: the same chatgate in front of the same fast fake upstream, with auth, rate
limits, a budget and the usage ledger on (SQLite; PostgreSQL + Redis) and with all of them off.

    .venv/bin/python bench/gateway.py        # --duration 10 --warmup 3 --levels 1,16

One run on loopback: bench/fast_upstream.py as the upstream; three chatgate servers in front of it:
"off" (open mode, ``ledger: false``), "on, SQLite" (a master key; requests with a virtual key that has
rpm and tpm limits and a budget, so every request is authenticated, counted, reserved, settled and
written to the ledger in the SQLite file) and "on, PostgreSQL + Redis" (the same, with the database on
127.0.0.1:5432 and the rate-limit counters in Redis on 127.0.0.1:6379; skipped, saying so, where they
are absent). wrk sends the same non-streamed completion to each at each concurrency, the targets interleaved
over `--rounds` rounds (3) so that drift on a shared machine hits them alike; the script prints the median round's
requests/s and p50/p99 for each, on/off ratios and the p50 latency the gateway adds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy import BODY, WRK_SCRIPT, Load, _terminate, check, find_wrk, started, upstream_python, wrk
from servers import BIN, free_port

HERE = Path(__file__).resolve().parent
MASTER = "sk-bench-master-" + secrets.token_hex(8)
POSTGRES = "postgresql://root@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"
OFF, SQLITE, SHARED = "off", "on, SQLite", "on, PostgreSQL + Redis"


def create_database() -> str | None:
    """A fresh PostgreSQL database for the run (its URL), or None when PostgreSQL is not reachable."""
    from sqlalchemy import text  # noqa: PLC0415
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

    name = "chatgate_bench_" + secrets.token_hex(4)

    async def run() -> None:
        engine = create_async_engine(POSTGRES.replace("postgresql://", "postgresql+asyncpg://"),
                                     isolation_level="AUTOCOMMIT")  # fmt: skip
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f"CREATE DATABASE {name}"))
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except Exception:  # not reachable: that target is skipped
        return None
    return POSTGRES.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    from sqlalchemy import text  # noqa: PLC0415
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

    async def run() -> None:
        engine = create_async_engine(POSTGRES.replace("postgresql://", "postgresql+asyncpg://"),
                                     isolation_level="AUTOCOMMIT")  # fmt: skip
        async with engine.connect() as conn:
            await conn.execute(text(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)"))
        await engine.dispose()

    with contextlib.suppress(Exception):
        asyncio.run(run())


def redis_reachable() -> bool:
    import redis  # noqa: PLC0415

    try:
        return bool(redis.Redis.from_url(REDIS, socket_timeout=2).ping())
    except Exception:  # not reachable: that target is skipped
        return False


def config(tmp: Path, name: str, upstream_v1: str, *, gateway: bool, database: str | None = None,
           redis_url: str | None = None) -> Path:  # fmt: skip
    data: dict[str, object] = {
        "log_level": "warning",
        "data_dir": str(tmp / f"data-{name}"),
        "models": [],
        "aliases": {},
        "providers": {"fake": {"base_url": upstream_v1, "api_key": "sk-x"}},
        "upstream_models": [{"name": "fake", "deployments": [{"provider": "fake", "model": "fake",
                             "input_price_per_million": 0.15, "output_price_per_million": 0.6}]}],
        "ledger": gateway,
    }  # fmt: skip
    if gateway:
        data["master_key"] = MASTER
    if database:
        data["database_url"] = database
    if redis_url:
        data["redis_url"] = redis_url
    path = tmp / f"chatgate-{name}.yaml"
    path.write_text(json.dumps(data, indent=2))  # JSON is YAML
    return path


def virtual_key(base: str) -> str:
    """A key with every per-request check on and never in the way: limits and a budget far above the load."""
    created = httpx.post(f"{base}/admin/keys", headers={"Authorization": f"Bearer {MASTER}"}, timeout=30,
                         json={"name": "bench", "rpm": 10**9, "tpm": 2 * 10**9, "max_budget": 10**6,
                               "budget_period": "monthly"})  # fmt: skip
    created.raise_for_status()
    key: str = created.json()["key"]
    return key


def ledger_rows(base: str) -> int:
    usage = httpx.get(f"{base}/admin/usage", params={"group_by": ""}, headers={"Authorization": f"Bearer {MASTER}"},
                      timeout=60).json()  # fmt: skip
    rows: int = usage["totals"]["requests"]
    return rows


def report(results: dict[tuple[str, int], Load], targets: list[str], args: argparse.Namespace,
           notes: list[str]) -> str:  # fmt: skip
    lines = [
        f"# chatgate's gateway on vs off, {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        f"`{' '.join(['.venv/bin/python', 'bench/gateway.py', *sys.argv[1:]])}`: non-streamed chat completions "
        f"through an upstream model, {args.rounds} interleaved rounds of {args.duration} s per target and concurrency "
        f"(the median round reported) after a {args.warmup} s warm-up, wrk, loopback.",
        "",
        "| gateway | concurrency | requests/s | p50 | p99 | errors |",
        "|---|---|---|---|---|---|",
    ]
    for c in args.levels:
        for t in targets:
            r = results[t, c]
            lines.append(f"| {t} | {c} | {r.rps:,.0f} | {r.p50_ms:.2f} ms | {r.p99_ms:.2f} ms | "
                         f"{r.errors + r.non_2xx} |")  # fmt: skip
    lines += ["", "| gateway | concurrency | requests/s, on / off | added p50 per request |", "|---|---|---|---|"]
    for c in args.levels:
        off = results[OFF, c]
        for t in targets[1:]:
            on = results[t, c]
            lines.append(f"| {t} | {c} | {on.rps / off.rps:.2f}x | {on.p50_ms - off.p50_ms:+.2f} ms |")
    lines += ["", *_targets(results, targets, args.levels)]
    return "\n".join([*lines, "", *[f"- {note}" for note in notes]]) + "\n"


def median_run(runs: list[Load]) -> Load:
    """The run with the median requests/s (its own p50 and p99 with it), errors summed over every run."""
    ordered = sorted(runs, key=lambda r: r.rps)
    middle = ordered[len(ordered) // 2]
    return dataclasses.replace(middle, errors=sum(r.errors for r in runs), non_2xx=sum(r.non_2xx for r in runs))


def _targets(results: dict[tuple[str, int], Load], targets: list[str], levels: list[int]) -> list[str]:
    """The goals: at most 1 ms added to the p50 at concurrency 1, at least 0.8x the requests/s of "off" at 16."""
    out = []
    for t in targets[1:]:
        if 1 in levels:
            added = results[t, 1].p50_ms - results[OFF, 1].p50_ms
            out.append(f"- {t}, concurrency 1: added p50 {added:+.2f} ms (goal <= +1 ms): "
                       f"{'met' if added <= 1.0 else 'NOT met'}")  # fmt: skip
        if 16 in levels:
            ratio = results[t, 16].rps / results[OFF, 16].rps
            out.append(f"- {t}, concurrency 16: {ratio:.2f}x the requests/s of off (goal >= 0.8x): "
                       f"{'met' if ratio >= 0.8 else 'NOT met'}")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per target and concurrency")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load per target before measuring (0: none)")
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per concurrency; medians reported")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gateway-latest.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)

    wrk_bin = find_wrk()
    python, loop = upstream_python()
    tmp = Path(tempfile.mkdtemp(prefix="chatgate-gateway-bench-"))
    ports = {"upstream": free_port(), OFF: free_port(), SQLITE: free_port(), SHARED: free_port()}
    upstream_v1 = f"http://127.0.0.1:{ports['upstream']}/v1"
    notes = [
        f"upstream: bench/fast_upstream.py ({loop}); every chatgate with `log_level: warning` (no access log line)",
        "on: a virtual key with rpm and tpm limits and a monthly budget (each request authenticated by its hash "
        "(the key record cached 2 s), counted against its limits (in process; with Redis, from the replica's "
        "allowance), its worst case held and its cost charged against the replica's budget lease (in memory; "
        "leases taken, renewed and written in the database in the background)) and the usage ledger on "
        "(batched writes); off: open mode, `ledger: false`",
        f"wrk, one thread, keep-alive; load generator, servers and upstream share the machine's {os.cpu_count()} cores",
    ]
    configs = {OFF: config(tmp, "off", upstream_v1, gateway=False),
               SQLITE: config(tmp, "sqlite", upstream_v1, gateway=True)}  # fmt: skip
    database = create_database()
    if database is not None and redis_reachable():
        configs[SHARED] = config(tmp, "shared", upstream_v1, gateway=True, database=database, redis_url=REDIS)
    else:
        notes.append("PostgreSQL + Redis: skipped, PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) is absent")
    targets = list(configs)
    results: dict[tuple[str, int], Load] = {}
    try:
        with contextlib.ExitStack() as stack:
            print("starting the upstream and the chatgate servers ...", flush=True)
            stack.enter_context(started("fake upstream", [python, str(HERE / "fast_upstream.py"), "--port",
                                                          str(ports["upstream"])], ports["upstream"],
                                        tmp / "upstream.log"))  # fmt: skip
            bases: dict[str, str] = {}
            scripts: dict[str, Path] = {}
            for target, path in configs.items():
                bases[target] = stack.enter_context(started(
                    f"chatgate ({target})", [str(BIN / "chatgate"), "serve", "--config", str(path), "--host",
                                             "127.0.0.1", "--port", str(ports[target])],
                    ports[target], tmp / f"chatgate-{len(bases)}.log", probe="/health"))  # fmt: skip
                key = "sk-x" if target == OFF else virtual_key(bases[target])
                check(target, bases[target], key)
                scripts[target] = tmp / f"post-{len(scripts)}.lua"
                scripts[target].write_text(WRK_SCRIPT % {"body": json.dumps(BODY), "key": key})
            if args.warmup > 0:
                print(f"warm-up: {args.warmup} s per target at concurrency {max(args.levels)} ...", flush=True)
                for target in targets:
                    wrk(wrk_bin, scripts[target], target, bases[target], max(args.levels), args.warmup)
            for c in args.levels:
                rounds: dict[str, list[Load]] = {t: [] for t in targets}
                for n in range(args.rounds):  # the targets interleaved, round after round: drift hits them alike
                    for target in targets:
                        r = wrk(wrk_bin, scripts[target], target, bases[target], c, args.duration)
                        rounds[target].append(r)
                        print(f"  round {n + 1}: {target:>24}, concurrency {c:>2}: {r.rps:8,.0f} req/s  p50 "
                              f"{r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  errors {r.errors + r.non_2xx}",
                              flush=True)  # fmt: skip
                for target in targets:
                    results[target, c] = median_run(rounds[target])
            for target in targets[1:]:
                notes.append(f"{target}: {ledger_rows(bases[target]):,} ledger rows written during the run")
            print("stopping ...", flush=True)
    finally:
        if database is not None:
            drop_database(database)
    text = report(results, targets, args, notes)
    print()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}; logs in {tmp}")


if __name__ == "__main__":
    main()
