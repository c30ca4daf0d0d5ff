"""The official OpenAI JavaScript SDK (npm ``openai``), unchanged, against the real server.

tests/js/smoke.mjs does the calls and prints what came back as one JSON object; this test checks it.
scripts/install.sh installs the pinned SDK into tests/js/node_modules when npm is available.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[2]
JS_DIR = REPO / "tests" / "js"
MODEL = "smollm2-135m-instruct"
MAX_TOKENS = 20  # what smoke.mjs asks for


def run_smoke(base_url: str) -> dict[str, Any]:
    result = run_script(base_url, "smoke.mjs", needs="openai")
    assert result["failures"] == [], json.dumps(result, indent=1)
    return result


def assert_usage(usage: dict[str, Any], completion_limit: int) -> None:
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= completion_limit
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_the_official_js_sdk_works_unchanged(base_url: str) -> None:
    result = run_smoke(base_url)

    pinned = json.loads((JS_DIR / "package.json").read_text())["dependencies"]["openai"]
    assert result["sdk_version"] == pinned, "tests/js/node_modules is stale: run scripts/install.sh"

    # (a) Non-streamed: the alias gpt-4 is answered by the real model, which is named in the response.
    completion = result["completion"]
    assert completion["object"] == "chat.completion"
    assert completion["id"].startswith("chatcmpl-")
    assert completion["model"] == MODEL
    assert completion["n_choices"] == 1
    assert completion["role"] == "assistant"
    assert completion["content"].strip()
    assert completion["finish_reason"] in {"stop", "length"}
    assert_usage(completion["usage"], MAX_TOKENS)
    if completion["finish_reason"] == "length":
        assert completion["usage"]["completion_tokens"] == MAX_TOKENS

    # (b) Streamed: deltas carry the text; with include_usage, the last chunk has usage and no choices.
    stream = result["stream"]
    assert stream["models"] == [MODEL]
    assert len(stream["ids"]) == 1
    assert stream["role"] == "assistant"
    assert stream["text"].strip()
    assert stream["finish_reason"] in {"stop", "length"}
    assert stream["usage"] is not None
    assert stream["usage_in_last_chunk"]
    assert stream["usage_chunk_choices"] == 0
    assert_usage(stream["usage"], MAX_TOKENS)

    # (c) Unknown model: the SDK raises its NotFoundError with OpenAI's code.
    error = result["error"]
    assert error["status"] == 404
    assert error["code"] == "model_not_found"
    assert error["is_not_found_error"]
    assert error["type"] == "invalid_request_error"
    assert "no-such-model" in error["message"]

    # (d) The model list names the real model (and, by default, the aliases).
    assert MODEL in result["models"]
    assert "gpt-4" in result["models"]


def run_script(base_url: str, script: str, *, needs: str = "zod") -> dict[str, Any]:
    """Run tests/js/``script`` against the server (skipped without Node.js or the npm package ``needs``);
    its stdout is one JSON object."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the OpenAI JavaScript SDK test needs Node.js (v20 or later)")
    if not (JS_DIR / "node_modules" / needs).is_dir():
        pytest.skip(f"tests/js/node_modules lacks {needs}: run scripts/install.sh (needs npm)")
    env = {**os.environ, "CHATGATE_BASE_URL": base_url}
    proc = subprocess.run([node, str((JS_DIR / script).relative_to(REPO))], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_zod_response_format_with_int_min_max_email_validates(base_url: str) -> None:
    """zod 4's .int() is +-(2^53-1) bounds, .email() a format and a pattern: all accepted and enforced."""
    result = run_script(base_url, "structured.mjs")
    assert result["failures"] == []
    schema = result["schema"]
    assert schema["properties"]["id"]["maximum"] == 2**53 - 1
    checker = jsonschema.FormatChecker()
    assert result["parsed"] == json.loads(result["parsed_content"])  # chat.completions.parse, seed 0
    jsonschema.validate(result["parsed"], schema, format_checker=checker)
    assert len(result["answers"]) == 3
    for answer in result["answers"]:
        jsonschema.validate(json.loads(answer["content"]), schema, format_checker=checker)
        assert answer["zod_ok"], answer
