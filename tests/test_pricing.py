"""Prices per million tokens as exact integers, costs rounded up to the micro-USD."""

from __future__ import annotations

from chatgate.pricing import Price, micro_usd, usd


def test_a_price_per_million_tokens_is_micro_usd_per_token() -> None:
    price = Price.per_million(2.5, 10)
    assert price == Price(2_500_000, 10_000_000)
    assert price.cost(1_000_000, 0) == 2_500_000  # $2.50
    assert price.cost(1000, 100) == 2500 + 1000


def test_fractional_prices_stay_exact_and_costs_round_up() -> None:
    price = Price.per_million(0.15, 0.6)
    assert price.cost(10, 0) == 2  # 1.5 micro-USD, rounded up
    assert price.cost(0, 5) == 3
    assert Price.per_million(None, None).free and Price().cost(10**9, 10**9) == 0


def test_the_dearer_of_two_prices_and_usd_conversions() -> None:
    assert Price(1, 9).most(Price(5, 2)) == Price(5, 9)
    assert micro_usd(0.000123) == 123 and usd(2_500_000) == 2.5
