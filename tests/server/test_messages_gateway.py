"""The Messages API behind the gateway: chatgate's keys in ``x-api-key`` or ``Authorization: Bearer``, and
chatgate's own refusals (401, 404, 429) and an upstream's overload (529) as the ``anthropic`` SDK's typed
exceptions. A real server with a master key in front of the fake Anthropic API on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from chatgate.config import ProviderConfig, Settings
from tests.conftest import make_settings
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import Behaviour
from tests.fakes.server import FakeServer
from tests.serving import ServerThread, running, serve

MASTER = "sk-master-messages-0123456789"
LOCAL = "smollm2-135m-instruct"
CLAUDE = "anthropic/claude-e2e"
HI: list[Any] = [{"role": "user", "content": "Hi"}]


def settings(upstream: str, data_dir: str) -> Settings:
    providers = {"anthropic": ProviderConfig(base_url=upstream, api_key="sk-ant-upstream-0123456789")}
    return make_settings(master_key=MASTER, data_dir=data_dir, providers=providers, retry_backoff_seconds=0.01)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeAnthropic, ServerThread]]:
    fake = FakeAnthropic()
    data = str(tmp_path_factory.mktemp("data"))
    with running(FakeServer(fake.app())) as upstream, serve(settings(upstream.url, data)) as server:
        yield fake, server


@pytest.fixture
def fake(served: tuple[FakeAnthropic, ServerThread]) -> Iterator[FakeAnthropic]:
    served[0].reset()
    yield served[0]
    served[0].reset()


@pytest.fixture
def server(served: tuple[FakeAnthropic, ServerThread]) -> ServerThread:
    return served[1]


def new_key(server: ServerThread, **fields: Any) -> str:
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {MASTER}"}) as admin:
        r = admin.post("/admin/keys", json={"name": "messages", **fields})
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


def sdk(server: ServerThread, api_key: str | None = None, auth_token: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, max_retries=0, api_key=api_key, auth_token=auth_token)


def test_a_key_works_in_x_api_key_and_as_a_bearer_token(server: ServerThread) -> None:
    key = new_key(server)
    for client in (sdk(server, api_key=key), sdk(server, auth_token=key)):
        r = client.messages.create(model=LOCAL, max_tokens=2, messages=HI)
        assert r.usage.output_tokens > 0


def test_an_upstream_anthropic_model_answers_through_messages(server: ServerThread, fake: FakeAnthropic) -> None:
    r = sdk(server, api_key=MASTER).messages.create(model=CLAUDE, max_tokens=20, system="Be brief.", messages=HI)
    assert r.content[0].type == "text" and r.content[0].text == fake.reply
    sent = fake.requests[-1]
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 20 and sent["model"] == "claude-e2e"


def test_a_missing_or_wrong_key_is_the_sdks_authentication_error(server: ServerThread) -> None:
    r = httpx.post(f"{server.base_url}/v1/messages", json={"model": LOCAL, "max_tokens": 2, "messages": HI})
    assert r.status_code == 401
    assert r.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "x-api-key header is required"},
    }
    with pytest.raises(anthropic.AuthenticationError) as err:
        sdk(server, api_key="sk-cg-wrong-0123456789").messages.create(model=LOCAL, max_tokens=2, messages=HI)
    assert err.value.status_code == 401 and "wrong" not in err.value.message


def test_a_model_the_key_may_not_use_is_not_found(server: ServerThread) -> None:
    key = new_key(server, allowed_models=[CLAUDE])
    with pytest.raises(anthropic.NotFoundError):
        sdk(server, api_key=key).messages.create(model=LOCAL, max_tokens=2, messages=HI)
    with pytest.raises(anthropic.NotFoundError):
        sdk(server, api_key=key).messages.count_tokens(model=LOCAL, messages=HI)


def test_the_keys_rate_limit_is_the_sdks_rate_limit_error(server: ServerThread) -> None:
    client = sdk(server, api_key=new_key(server, rpm=1))
    client.messages.create(model=LOCAL, max_tokens=1, messages=HI)
    with pytest.raises(anthropic.RateLimitError) as err:
        client.messages.create(model=LOCAL, max_tokens=1, messages=HI)
    assert err.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(err.value.response.headers["retry-after"]) >= 1


def test_an_overloaded_upstream_is_the_sdks_overloaded_error(server: ServerThread, fake: FakeAnthropic) -> None:
    fake.then(*[Behaviour(status=529)] * 8)
    with pytest.raises(anthropic.OverloadedError) as err:
        sdk(server, api_key=MASTER).messages.create(model=CLAUDE, max_tokens=5, messages=HI)
    assert err.value.status_code == 529 and err.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_a_stream_refused_before_its_first_event_gets_a_real_status(server: ServerThread, fake: FakeAnthropic) -> None:
    fake.then(*[Behaviour(error_code="overloaded_error")] * 8)
    body = {"model": CLAUDE, "max_tokens": 5, "stream": True, "messages": HI}
    r = httpx.post(f"{server.base_url}/v1/messages", json=body, headers={"x-api-key": MASTER})
    assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error"
