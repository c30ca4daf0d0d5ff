"""Legacy text completions routed to an OpenAI-compatible upstream's ``/v1/completions`` (a fake one on
loopback), and refused for a model whose deployments cannot complete a raw prompt (Anthropic's)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from chatgate.config import ProviderConfig
from tests.conftest import make_settings
from tests.fakes.openai_text_upstream import FakeTextCompletions
from tests.fakes.server import FakeServer
from tests.serving import ServerThread, running, serve

UPSTREAM = "vllm/served-model"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeTextCompletions, ServerThread]]:
    fake = FakeTextCompletions()
    with running(FakeServer(fake.app())) as upstream:
        providers = {
            "vllm": ProviderConfig(kind="openai_compatible", base_url=f"{upstream.url}/v1"),
            "anthropic": ProviderConfig(base_url=upstream.url, api_key="sk-ant-unused-0123456789"),
        }
        with serve(make_settings(providers=providers, retry_backoff_seconds=0.01)) as server:
            yield fake, server


@pytest.fixture
def fake(served: tuple[FakeTextCompletions, ServerThread]) -> Iterator[FakeTextCompletions]:
    served[0].requests.clear()
    yield served[0]
    served[0].fail_with = None


@pytest.fixture
def sdk(served: tuple[FakeTextCompletions, ServerThread]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{served[1].base_url}/v1", api_key="x", max_retries=0) as c:
        yield c


def test_a_completion_passes_through_in_the_legacy_shape(sdk: openai.OpenAI, fake: FakeTextCompletions) -> None:
    r = sdk.completions.create(model=UPSTREAM, prompt="The capital of France:", max_tokens=9, stop=["\n"], n=2,
                               logprobs=1, echo=False, seed=3)  # fmt: skip
    sent = fake.requests[-1]
    assert sent["model"] == "served-model" and sent["prompt"] == "The capital of France:"
    assert (sent["max_tokens"], sent["stop"], sent["n"], sent["logprobs"], sent["seed"]) == (9, ["\n"], 2, 1, 3)
    assert "messages" not in sent and "top_logprobs" not in sent and sent["stream"] is False
    assert [c.text for c in r.choices] == [fake.reply, fake.reply] and r.usage is not None
    lp = r.choices[0].logprobs
    assert lp is not None and "".join(lp.tokens or []) == fake.reply
    assert lp.top_logprobs and len(lp.top_logprobs[0]) == 1


def test_a_stream_passes_through(sdk: openai.OpenAI, fake: FakeTextCompletions) -> None:
    chunks = list(sdk.completions.create(model=UPSTREAM, prompt="Q:", max_tokens=9, stream=True, echo=True,
                                         stream_options={"include_usage": True}))  # fmt: skip
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Q:" + fake.reply
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(fake.reply.split(" "))
    assert fake.requests[-1]["stream"] is True


def test_an_upstream_error_is_the_sdks_error(sdk: openai.OpenAI, fake: FakeTextCompletions) -> None:
    fake.fail_with = 404
    with pytest.raises(openai.NotFoundError):
        sdk.completions.create(model=UPSTREAM, prompt="Q:", max_tokens=3)


def test_a_model_that_cannot_complete_raw_prompts_is_400(sdk: openai.OpenAI, fake: FakeTextCompletions) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        sdk.completions.create(model="anthropic/claude-x", prompt="Q:", max_tokens=3)
    assert err.value.param == "model" and "/v1/chat/completions" in err.value.message
    assert fake.requests == []
