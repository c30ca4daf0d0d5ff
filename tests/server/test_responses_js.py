"""The Vercel AI SDK's OpenAI provider (npm ``ai`` + ``@ai-sdk/openai``), unchanged, against the real
server: ``openai(model)`` speaks the Responses API (``generateText``, ``streamText``, and a tool round trip
with each of them: a forced call, its result sent back, then the answer)."""

from __future__ import annotations

from tests.server.test_js_sdk import run_script

MODEL = "smollm2-135m-instruct"


def test_vercel_ai_sdk_generate_stream_and_tools(base_url: str) -> None:
    result = run_script(base_url, "ai_sdk.mjs", needs="@ai-sdk/openai")
    assert result["failures"] == []
    generated = result["generate"]
    assert generated["text"] and generated["responseId"].startswith("resp_") and generated["modelId"] == MODEL
    assert generated["finishReason"] == "stop" and generated["usage"]["outputTokens"] > 0
    streamed = result["stream"]
    assert streamed["text"] and streamed["finishReason"] == "stop" and streamed["usage"]["outputTokens"] > 0
    for name in ("tool", "stream_tool"):
        steps = result[name]["steps"]
        assert [s["finishReason"] for s in steps] == ["tool-calls", "stop"], steps
        assert steps[0]["toolCalls"] == ["weather"] and result[name]["text"]
    assert result["tool"]["steps"][0]["toolResults"][0]["temperature_c"] == 21
