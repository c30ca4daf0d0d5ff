"""chatgate: a self-hosted, OpenAI-compatible Chat Completions service."""

__version__ = "0.1.0"
