"""A fake OpenAI-compatible server's legacy ``POST /v1/completions`` (as vLLM, llama-server or Ollama serve
it), speaking the real wire format: the reply's words, one per stream event, legacy logprobs when asked
for, usage, errors in OpenAI's shape. It records every request body."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class FakeTextCompletions:
    reply: str = "Paris is the capital"
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_with: int | None = None

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/completions", self._complete, methods=["POST"])])

    def _words(self) -> list[str]:
        return [(" " if i else "") + w for i, w in enumerate(self.reply.split(" "))]

    def _choice(self, body: dict[str, Any], index: int, words: list[str], finish: str | None) -> dict[str, Any]:
        logprobs = None
        if body.get("logprobs") is not None:
            offsets = [sum(len(w) for w in words[:i]) for i in range(len(words))]
            tops = [dict(list({w: -0.5, "x": -1.5}.items())[: body["logprobs"]]) for w in words]
            logprobs = {"tokens": words, "token_logprobs": [-0.5] * len(words), "top_logprobs": tops,
                        "text_offset": offsets}  # fmt: skip
        return {"text": "".join(words), "index": index, "logprobs": logprobs, "finish_reason": finish}

    async def _complete(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        if self.fail_with is not None:
            error = {"message": f"fake {self.fail_with}", "type": "invalid_request_error", "param": None, "code": None}
            return JSONResponse({"error": error}, status_code=self.fail_with)
        if body.get("stream"):
            return StreamingResponse(self._stream(body), media_type="text/event-stream")
        n = body.get("n", 1)
        words = self._words()
        return JSONResponse({
            "id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": body["model"],
            "choices": [self._choice(body, i, words, "stop") for i in range(n)],
            "usage": {"prompt_tokens": 5, "completion_tokens": len(words) * n, "total_tokens": 5 + len(words) * n},
        })  # fmt: skip

    async def _stream(self, body: dict[str, Any]) -> AsyncIterator[str]:
        base = {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": body["model"]}
        words = self._words()
        for word in words:
            yield f"data: {json.dumps({**base, 'choices': [self._choice(body, 0, [word], None)]})}\n\n"
        end = {"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}
        yield f"data: {json.dumps({**base, 'choices': [end]})}\n\n"
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
