#!/usr/bin/env bash
# Create .venv and install chatgate with its pinned dependencies (requirements.lock).
# The first install compiles llama.cpp (llama-cpp-python) from source; its progress is shown.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "==> Creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip

llama_pin="$(grep -iE '^llama[-_]cpp[-_]python==' requirements.lock)"
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
    echo "==> Installing $llama_pin."
    echo "    A first install compiles llama.cpp from source: about 8 minutes on 2 cores (pip caches the"
    echo "    wheel, so later installs take seconds). Compiler progress follows; full log: .venv/llama-build.log"
    set +e
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" .venv/bin/pip install --disable-pip-version-check -v "$llama_pin" \
        > .venv/llama-build.log 2>&1 &
    pip_pid=$!
    touch .venv/llama-build.log
    last=""
    while kill -0 "$pip_pid" 2>/dev/null; do
        step="$(grep -oE '^\s*\[[0-9]+/[0-9]+\]' .venv/llama-build.log | tail -1 | tr -d ' ')"
        if [ -n "$step" ] && [ "$step" != "$last" ]; then
            echo "    building llama.cpp $step"
            last="$step"
        fi
        sleep 10
    done
    wait "$pip_pid"
    status=$?
    set -e
    if [ "$status" -ne 0 ]; then
        tail -40 .venv/llama-build.log
        echo "==> Installing llama-cpp-python failed (see .venv/llama-build.log)" >&2
        exit "$status"
    fi
    echo "==> llama-cpp-python installed"
fi

echo "==> Installing chatgate and its pinned dependencies"
.venv/bin/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'

if command -v npm >/dev/null 2>&1; then
    echo "==> Installing the OpenAI JavaScript SDK used by the tests (tests/js, pinned in package-lock.json)"
    if ! npm ci --prefix tests/js --no-audit --no-fund --loglevel=error >/dev/null; then
        echo "==> npm ci failed: the JavaScript SDK test will be skipped" >&2
    fi
else
    echo "==> npm not found: the JavaScript SDK test (tests/server/test_js_sdk.py) will be skipped"
fi
echo "==> Ready: .venv/bin/chatgate"
