"""The gateway: API keys, and (to come) budgets, rate limits, the usage ledger and the cache."""
