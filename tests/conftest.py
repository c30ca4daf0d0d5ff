"""Shared fixtures: one real server with the real default model for the whole session."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import httpx
import openai
import pytest

from chatgate.backends.local.llama import GGUFModel
from chatgate.backends.local.loader import embedded_model_path
from chatgate.config import Settings, load_settings
from tests.serving import ServerThread

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


@pytest.fixture(scope="session")
def server() -> Iterator[ServerThread]:
    running = ServerThread(make_settings()).start()
    yield running
    running.stop()


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
