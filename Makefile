# The two quickstart commands: `make serve` and `make test`. Both set everything up first.
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test lint typecheck unit bench lock clean

$(STAMP): pyproject.toml requirements.lock scripts/install.sh tests/js/package-lock.json
	@bash scripts/install.sh
	@touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/chatgate serve

test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[dev,bench]"
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Re-pin every dependency to what is installed now.
lock: $(STAMP)
	@( echo "# Pinned versions of every dependency (runtime and dev), used as pip constraints by"; \
	   echo "# scripts/install.sh. Regenerate with: make lock"; \
	   $(BIN)/pip freeze --exclude-editable | grep -viE '^chatgate' ) > requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
