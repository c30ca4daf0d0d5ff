"""Prices and costs, in integer micro-USD.

A price is given as USD per million tokens, which is exactly micro-USD per token; it is kept as an
integer number of micro-USD per million tokens so that sub-micro-dollar prices (0.15 USD per
million) stay exact. A cost is rounded up to the next whole micro-USD.
"""

from __future__ import annotations

from dataclasses import dataclass

MILLION = 1_000_000


@dataclass(frozen=True)
class Price:
    input: int = 0
    """Micro-USD per million prompt tokens (= USD per million tokens x 10^6)."""
    output: int = 0
    """Micro-USD per million completion tokens."""

    @classmethod
    def per_million(cls, input_usd: float | None, output_usd: float | None) -> Price:
        """From the USD-per-million-tokens prices of a config file (unset: free)."""
        return cls(round((input_usd or 0) * MILLION), round((output_usd or 0) * MILLION))

    @property
    def free(self) -> bool:
        return self.input == 0 and self.output == 0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Micro-USD for this many tokens, rounded up."""
        total = prompt_tokens * self.input + completion_tokens * self.output
        return -(-total // MILLION)

    def most(self, other: Price) -> Price:
        """The dearer of two prices, input and output each."""
        return Price(max(self.input, other.input), max(self.output, other.output))


FREE = Price()


def usd(micro: int) -> float:
    """Micro-USD as USD, for display."""
    return micro / MILLION


def micro_usd(dollars: float) -> int:
    return round(dollars * MILLION)
