"""Cost of constrained decoding, measured in-process on the local engine, in one run.

    .venv/bin/python bench/grammar.py

Prints the time per token without a grammar and under several JSON schemas (same prompt, greedy,
4 requests one after another each: a list of words, and what pydantic and zod send), and the time
to turn a schema into an llguidance matcher: cold (check, build, validate, prove satisfiable) and
cached (a copy of the cached matcher). The time per token includes the prompt's prefill, shared
by fewer tokens when a schema ends its answer early.
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
from chatgate.exchange import Exchange
from chatgate.protocol import ChatCompletionRequest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.schemas import SCHEMAS, TOOLS

LIST_SCHEMA = {
    "type": "object",
    "properties": {"words": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 40}},
    "required": ["words"],
}


SAFE = 9007199254740991
# What client libraries send: pydantic Field(ge, le) / conint / EmailStr, and zod 4's .int() (+-2^53 bounds).
CLIENT_SCHEMAS: dict[str, dict[str, Any]] = {
    "pydantic bounds + EmailStr": {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "score": {"type": "integer", "minimum": -5, "exclusiveMaximum": 5},
            "email": {"type": "string", "format": "email"},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        },
        "required": ["age", "score", "email", "ratio"],
        "additionalProperties": False,
    },
    "zod .int() .min() .max() .email()": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": -SAFE, "maximum": SAFE},
            "count": {"type": "integer", "minimum": 1, "maximum": 10},
            "email": {"type": "string", "format": "email"},
            "name": {"type": "string", "minLength": 1, "maxLength": 30},
        },
        "required": ["id", "count", "email", "name"],
        "additionalProperties": False,
    },
}


def request(**fields: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "List many words as JSON."}],
            "temperature": 0, "max_tokens": 128, **fields}  # fmt: skip
    return ChatCompletionRequest.model_validate_json(json.dumps(body))


async def tokens_per_second(backend: Any, req: ChatCompletionRequest, runs: int = 4) -> float:
    tokens, seconds = 0, 0.0
    for _ in range(runs):
        start = time.perf_counter()
        r = await backend.complete(req, Exchange("bench"))
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


def time_per_token(backend: Any) -> list[tuple[str, float]]:
    """ms per generated token: free decoding, then each schema (same prompt, greedy)."""
    schemas = {"words list": LIST_SCHEMA, **CLIENT_SCHEMAS}
    rows = [("unconstrained", 1000 / asyncio.run(tokens_per_second(backend, request(logit_bias={"2": -100}))))]
    for name, schema in schemas.items():
        fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
        rows.append((name, 1000 / asyncio.run(tokens_per_second(backend, request(response_format=fmt)))))
    return rows


def main() -> None:
    settings = load_settings(env={})
    backend = load_local_backend(settings.models[0], settings)
    try:
        rows = time_per_token(backend)
        cold, tools_cold, cached = compile_times(backend.grammars)
    finally:
        close_local_backend(backend)
    free = rows[0][1]
    print("| decoding | ms/token | vs free |\n|---|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} | {ms / free:.2f}x |")
    print("\n| schema to compiled grammar (median of the 31 test schemas) | ms |\n|---|---|")
    print(f"| cold: check + compile + satisfiability | {cold:.2f} |\n| 20-tool grammar, cold | {tools_cold:.2f} |")
    print(f"| cached: fresh matcher | {cached:.3f} |")


if __name__ == "__main__":
    main()
