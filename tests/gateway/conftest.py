"""Database engines for gateway tests: SQLite in a temporary directory, and the machine's real
PostgreSQL in a schema of its own (skipped, saying why, where PostgreSQL is absent); a redis-server of a
test's own, that it can kill."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from chatgate.gateway.store import database_url, migrate, open_engine
from tests.conftest import make_settings
from tests.gateway.helpers import MASTER
from tests.serving import ServerThread, serve

POSTGRES = "postgresql+asyncpg://root@127.0.0.1:5432/test"


def _on_postgres(statement: str) -> bool:
    """Run one statement on the local PostgreSQL (outside a transaction, as CREATE DATABASE needs);
    False when PostgreSQL cannot be reached."""

    async def run() -> None:
        engine = create_async_engine(POSTGRES, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except Exception:  # any failure to reach it means: not available here
        return False
    return True


@contextmanager
def fresh_on_postgres(kind: Literal["SCHEMA", "DATABASE"]) -> Iterator[str]:
    """The name of a fresh schema or database on the local PostgreSQL, dropped on leaving; the test is
    skipped, saying why, where PostgreSQL cannot be reached."""
    name = "cg_test_" + secrets.token_hex(4)
    if not _on_postgres(f"CREATE {kind} {name}"):
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (database 'test')")
    try:
        yield name
    finally:
        _on_postgres(
            f"DROP SCHEMA {name} CASCADE" if kind == "SCHEMA" else f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(url, schema) of an empty database."""
    if request.param == "sqlite":
        yield database_url(None, str(tmp_path)), None
        return
    with fresh_on_postgres("SCHEMA") as schema:
        yield POSTGRES, schema


def engine_for(db: tuple[str, str | None]) -> AsyncEngine:
    return open_engine(db[0], schema=db[1])


async def migrated(db: tuple[str, str | None]) -> AsyncEngine:
    engine = engine_for(db)
    await migrate(engine)
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def server_database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The ``database_url`` setting of a server under test: None (SQLite in its data_dir) or a fresh
    PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    with fresh_on_postgres("DATABASE") as name:
        yield f"postgresql://root@127.0.0.1:5432/{name}"


@pytest.fixture
def admin_server(tmp_path: Path, server_database: str | None) -> Iterator[ServerThread]:
    """A real server with the master key, on each database (SQLite, then PostgreSQL)."""
    with serve(make_settings(master_key=MASTER, data_dir=str(tmp_path), database_url=server_database)) as server:
        yield server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A redis-server of this test's own on ``port`` (no persistence), that the test can kill."""

    def __init__(self, port: int) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisProcess:
        self._proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save",
                                       "", "--appendonly", "no"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 30  # a hang guard, not a speed bound
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def __enter__(self) -> RedisProcess:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=30)
            self._proc = None
