"""chatgate's own model: a GGUF file run by llama.cpp on the CPU."""

from chatgate.backends.local.backend import LocalBackend
from chatgate.backends.local.loader import close_local_backend, embedded_model_path, load_local_backend

__all__ = ["LocalBackend", "close_local_backend", "embedded_model_path", "load_local_backend"]
