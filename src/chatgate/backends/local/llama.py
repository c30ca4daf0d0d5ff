"""A thin, typed layer over llama.cpp's C API (through llama-cpp-python's ctypes bindings).

Only this module and :mod:`chatgate.backends.local.engine` touch raw llama.cpp pointers.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import llama_cpp

log = logging.getLogger("chatgate.llama")

# ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continuation: logged as debug)
_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _forward_log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    message = text.decode("utf-8", errors="replace").rstrip()
    if message and message != ".":
        log.log(_LEVELS.get(level, logging.DEBUG), "%s", message)


_init_lock = threading.Lock()
_initialised: list[bool] = []


def init_backend() -> None:
    """Route llama.cpp's logging into Python logging and initialise its backend, once."""
    with _init_lock:
        if not _initialised:
            llama_cpp.llama_log_set(_forward_log, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _initialised.append(True)


def cpu_has_amx() -> bool:
    """Whether this CPU advertises Intel AMX (``amx_int8`` in /proc/cpuinfo; False where unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            return any(line.startswith("flags") and " amx_int8" in line for line in info)
    except OSError:
        return False


class ModelLoadError(Exception):
    """A GGUF file could not be loaded."""


class GGUFModel:
    """A loaded GGUF model: weights, vocabulary and metadata. Thread-safe for reading."""

    def __init__(self, path: Path) -> None:
        init_backend()
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        if cpu_has_amx():
            # llama.cpp's AMX matrix kernels (built in by -march=native on such CPUs) crash in batched
            # decoding (a segfault in ggml_backend_amx_mul_mat with several sequences): keep the weights
            # in plain CPU buffers there. Elsewhere the extra buffer types (repacked weights) stay on.
            params.use_extra_bufts = False
        self.path = path
        self.ptr: Any = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise ModelLoadError(f"llama.cpp could not load {path} (is it a GGUF model?)")
        self.vocab: Any = llama_cpp.llama_model_get_vocab(self.ptr)
        self.n_vocab: int = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train: int = llama_cpp.llama_model_n_ctx_train(self.ptr)
        self.size_bytes: int = llama_cpp.llama_model_size(self.ptr)
        self._pieces: dict[int, bytes] = {}

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_model_free(self.ptr)
            self.ptr = None

    def meta(self, key: str) -> str | None:
        """A metadata value as a string, or ``None`` when the GGUF lacks the key."""
        size = 1 << 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_model_meta_val_str(self.ptr, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = n + 1

    def describe(self) -> str:
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_model_desc(self.ptr, buf, 256)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        """``text``'s tokens. A chat prompt goes through :func:`chatgate.backends.local.prompt.tokenize_prompt`,
        which cuts it at the template's control tokens and tokenises the pieces with ``parse_special``
        off: llama.cpp's special-token split is quadratic in their number, and request text must stay text."""
        data = text.encode("utf-8")
        capacity = len(data) + 16
        while True:
            out = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), out, capacity, add_special, parse_special)
            if n >= 0:
                return list(out[:n])
            capacity = -n

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (special tokens render as nothing)."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, size, 0, False)
            if n >= 0:
                piece = buf.raw[:n]
                self._pieces[token] = piece
                return piece
            size = -n

    def token_text(self, token: int) -> str:
        """A token's text as the vocabulary spells it, special tokens included."""
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, size, 0, True)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = -n

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def token_attr(self, token: int) -> int:
        """The token's ``LLAMA_TOKEN_ATTR_*`` flags."""
        return int(llama_cpp.llama_vocab_get_attr(self.vocab, token))

    def bos_id(self) -> int:
        """The BOS token's id, or -1 when the vocabulary has none."""
        return int(llama_cpp.llama_vocab_bos(self.vocab))

    def special_text(self, which: str) -> str:
        """The text of the BOS or EOS token (``""`` when the vocabulary has none)."""
        token = llama_cpp.llama_vocab_bos(self.vocab) if which == "bos" else llama_cpp.llama_vocab_eos(self.vocab)
        return "" if token < 0 else self.token_text(token)

    def adds_bos(self) -> bool:
        return bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))


def model_tokenizer(model: GGUFModel) -> Any:
    """llguidance's view of the model's vocabulary (about a second: build it once per model).

    Every end-of-generation token counts as EOS, so a grammar may end on any of them."""
    from llguidance.llamacpp import lltokenizer_from_vocab  # noqa: PLC0415  (imports llama_cpp's internals)

    eog = [token for token in range(model.n_vocab) if model.is_eog(token)]
    with warnings.catch_warnings():  # it reads token attributes through a deprecated binding, once per token
        warnings.simplefilter("ignore", DeprecationWarning)
        return lltokenizer_from_vocab(model.vocab, eos_token=eog or None)
