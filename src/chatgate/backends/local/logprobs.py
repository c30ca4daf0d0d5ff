"""Log-probabilities in OpenAI's shape, computed from the model's raw logits."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from chatgate.protocol import TokenLogprob, TopLogprob


class _Vocab(Protocol):
    def piece(self, token: int) -> bytes: ...


def _display(piece: bytes) -> str:
    return piece.decode("utf-8", errors="replace")


def token_logprob(vocab: _Vocab, logits: npt.NDArray[np.float32], token: int, piece: bytes, top: int) -> TokenLogprob:
    """The log-probability of ``token`` under the model's distribution, with the ``top`` most
    likely alternatives. ``bytes`` are the token's UTF-8 bytes, which may hold part of a character."""
    values = logits.astype(np.float64)
    peak = float(values.max())
    log_norm = peak + float(np.log(np.exp(values - peak).sum()))
    alternatives: list[TopLogprob] = []
    if top > 0:
        best = np.argpartition(-values, top - 1)[:top]
        best = best[np.argsort(-values[best], kind="stable")]
        for alt in best.tolist():
            alt_piece = vocab.piece(alt)
            alternatives.append(
                TopLogprob(token=_display(alt_piece), logprob=float(values[alt]) - log_norm, bytes=list(alt_piece))
            )
    return TokenLogprob(
        token=_display(piece),
        logprob=float(values[token]) - log_norm,
        bytes=list(piece),
        top_logprobs=alternatives,
    )
