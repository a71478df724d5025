# Quick start: `make demo` runs the pipeline demo, `make test` runs every check CI runs.
# Both create .venv from nothing on first use (and again whenever pyproject.toml changes).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit integration ops bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/convstream demo

# The default suite, then the short soak / chaos runs (about 2.5 minutes on 2 cores).
test: lint typecheck
	$(BIN)/pytest
	$(BIN)/pytest -m "soak and not soak_long"

# Every short soak / chaos run (`make test` runs all but the soak_long ones;
# bench/soak.py is the long form).
soak: $(STAMP)
	$(BIN)/pytest -m soak

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration tests/e2e

# The chart, dashboard, alert rules and Dockerfile. The rule tests need promtool
# (Debian/Ubuntu: `sudo apt-get install prometheus`; macOS: `brew install prometheus`);
# without it they fail, they are never skipped.
ops: $(STAMP)
	$(BIN)/pytest -m ops tests/ops

bench: $(STAMP)
	$(BIN)/python -m bench.bench_core

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
