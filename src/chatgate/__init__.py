"""chatgate: a self-hosted, OpenAI-compatible Chat Completions service.

``from chatgate import OpenAI`` (or ``AsyncOpenAI``) runs the router in-process: see
:mod:`chatgate.client`.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["AsyncOpenAI", "OpenAI", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `import chatgate` stays light (no llama.cpp, no httpx).
    if name in ("OpenAI", "AsyncOpenAI"):
        from chatgate import client  # noqa: PLC0415

        return getattr(client, name)
    raise AttributeError(name)
