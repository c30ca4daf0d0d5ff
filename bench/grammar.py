"""Cost of constrained decoding, measured in-process on the local engine, in one run.

    .venv/bin/python bench/grammar.py

Prints decode tokens/s with and without a JSON-schema grammar (same prompt, greedy, 4 requests
one after another), and the time to turn a schema into a compiled llama.cpp grammar: cold
(check, build, validate, prove satisfiable) and cached (a copy of the cached matcher).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from chatgate.backends.local import close_local_backend, load_local_backend
from chatgate.backends.local.grammar import ToolSpec, schema_grammar, tools_grammar
from chatgate.backends.local.matchers import GrammarCompiler
from chatgate.config import load_settings
from chatgate.context import RequestContext
from chatgate.protocol import ChatCompletionRequest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.schemas import SCHEMAS, TOOLS

LIST_SCHEMA = {
    "type": "object",
    "properties": {"words": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 40}},
    "required": ["words"],
}


def request(**fields: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "List many words as JSON."}],
            "temperature": 0, "max_tokens": 128, **fields}  # fmt: skip
    return ChatCompletionRequest.model_validate_json(json.dumps(body))


async def tokens_per_second(backend: Any, req: ChatCompletionRequest, runs: int = 4) -> float:
    tokens, seconds = 0, 0.0
    for _ in range(runs):
        start = time.perf_counter()
        r = await backend.complete(req, RequestContext("bench"))
        seconds += time.perf_counter() - start
        tokens += r.usage.completion_tokens
    return tokens / seconds


def compile_times(compiler: GrammarCompiler) -> tuple[float, float, float]:
    """Median ms: schema to checked grammar cold, the 20-tool grammar cold, fresh matchers from the cache."""
    cold, tools_cold, cached = [], [], []
    for schema in SCHEMAS:
        fresh = GrammarCompiler(compiler.tokenizer, compiler.config)
        start = time.perf_counter()
        fresh.compile(schema_grammar(schema))
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        fresh.matchers(schema_grammar(schema), 1)
        cached.append(time.perf_counter() - start)
    for _ in range(5):
        fresh = GrammarCompiler(compiler.tokenizer, compiler.config)
        start = time.perf_counter()
        fresh.compile(tools_grammar([ToolSpec(t["name"], t["parameters"]) for t in TOOLS], allow_content=True,
                                    parallel=True))  # fmt: skip
        tools_cold.append(time.perf_counter() - start)
    return tuple(statistics.median(x) * 1000 for x in (cold, tools_cold, cached))  # type: ignore[return-value]


def main() -> None:
    settings = load_settings(env={})
    backend = load_local_backend(settings.models[0], settings)
    try:
        fmt = {"type": "json_schema", "json_schema": {"name": "words", "schema": LIST_SCHEMA}}
        free = asyncio.run(tokens_per_second(backend, request(logit_bias={"2": -100})))
        constrained = asyncio.run(tokens_per_second(backend, request(response_format=fmt)))
        cold, tools_cold, cached = compile_times(backend.grammars)
    finally:
        close_local_backend(backend)
    print("| decoding | tokens/s |\n|---|---|")
    print(f"| unconstrained | {free:.1f} |\n| JSON schema grammar | {constrained:.1f} |")
    print(f"\nconstrained / unconstrained: {constrained / free:.2f}x")
    print("\n| schema to compiled grammar (median of the 31 test schemas) | ms |\n|---|---|")
    print(f"| cold: check + compile + satisfiability | {cold:.2f} |\n| 20-tool grammar, cold | {tools_cold:.2f} |")
    print(f"| cached: fresh matcher | {cached:.3f} |")


if __name__ == "__main__":
    main()
