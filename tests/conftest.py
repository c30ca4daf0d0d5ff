"""Shared fixtures: one real server with the real default model for the whole session, a factory of
servers of a test's own, and a guard that no test leaves ``os.environ`` changed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Protocol

import httpx
import openai
import pytest

from chatgate.backends.local.llama import GGUFModel
from chatgate.backends.local.loader import embedded_model_path
from chatgate.config import Settings, load_settings
from tests.serving import ServerThread, serve

TEST_N_CTX = 2048


def make_settings(**changes: object) -> Settings:
    """The built-in defaults (embedded model, aliases) with a smaller context for quick tests."""
    settings = load_settings(env={})
    models = [m.model_copy(update={"n_ctx": TEST_N_CTX}) for m in settings.models]
    data_dir = tempfile.mkdtemp(prefix="chatgate-test-")  # the ledger's SQLite file, never the checkout's data/
    # one engine thread: the machine is shared, and llama.cpp's workers stall each other under contention
    return settings.model_copy(update={"models": models, "data_dir": data_dir, "threads": 1, **changes})


@pytest.fixture(scope="session")
def vocab() -> Iterator[GGUFModel]:
    """The default model's vocabulary, for tests that need token ids."""
    model = GGUFModel(embedded_model_path())
    yield model
    model.close()


class StartServer(Protocol):
    def __call__(self, settings: Settings | None = None, /, **changes: object) -> ServerThread: ...


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Starts a real server from ``settings`` (with ``changes`` applied), or from ``make_settings(**changes)``;
    every server it started is stopped when the test ends, passed or failed, the last started first."""
    with ExitStack() as started:

        def start(settings: Settings | None = None, /, **changes: object) -> ServerThread:
            if settings is None:
                settings = make_settings(**changes)
            elif changes:
                settings = settings.model_copy(update=changes)
            return started.enter_context(serve(settings))

        yield start


@pytest.fixture(scope="session")
def server() -> Iterator[ServerThread]:
    with serve(make_settings()) as running:
        yield running


@pytest.fixture(scope="session")
def base_url(server: ServerThread) -> str:
    return server.base_url


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="anything", max_retries=0) as c:
        yield c


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120) as c:
        yield c


# --- os.environ: a test or fixture that changes it must restore it ---------------------------------

NOT_OURS = frozenset({"PYTEST_CURRENT_TEST"})  # pytest's own, rewritten at every phase of every test


def environ_changes(before: dict[str, str]) -> list[str]:
    """Names of the variables added, removed or changed since ``before`` (never their values)."""
    now = os.environ
    return sorted(n for n in (before.keys() | now.keys()) - NOT_OURS if before.get(n) != now.get(n))


def check_environ(before: dict[str, str], who: str) -> None:
    """Fails, naming the variables, when ``os.environ`` differs from ``before``; puts it back first, so that
    one leak fails one test and not every test after it."""
    changed = environ_changes(before)
    if changed:
        for name in changed:
            if name in before:
                os.environ[name] = before[name]
            else:
                del os.environ[name]
        pytest.fail(f"{who} left os.environ changed ({', '.join(changed)}): use monkeypatch.setenv, "
                    "pytest.MonkeyPatch.context() or pass env= explicitly", pytrace=False)  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def environ_kept_by_the_session() -> Iterator[None]:
    """Catches what the per-test check cannot see: module and session fixtures that leave a variable set."""
    before = dict(os.environ)
    yield
    check_environ(before, "a module or session fixture")


@pytest.fixture(autouse=True)
def environ_kept_by_each_test() -> Iterator[None]:
    before = dict(os.environ)
    yield
    check_environ(before, "this test (or a function-scoped fixture)")
