# Quick start: `make demo` runs the pipeline demo, `make test` runs every check CI runs.
# Both create .venv from nothing on first use (and again whenever pyproject.toml changes).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The locked dependency set (exact versions, sha256 of every file): requirements.lock for the
# worker (the Dockerfile installs it), requirements-dev.lock for it plus the dev extra.
LOCK     := requirements.lock
DEV_LOCK := requirements-dev.lock

.PHONY: demo test lint readme-errors typecheck unit integration ops bench soak clean kafka-jars java-maven \
	lock audit quix-venv

# Every package from the lock, hash-checked, then convstream itself without resolving anything:
# the virtualenv is exactly the lock, on any machine, on any day.
$(STAMP): pyproject.toml $(DEV_LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes --only-binary=:all: -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The Quix Streams peer of the benchmark (bench/peers/quix_peer.py) in an environment of its
# own: quixstreams 3.x requires confluent-kafka <2.13 and the worker >=2.16.0, so they cannot
# share .venv. It holds the peer's locked packages, and streams.core comes from this checkout
# (PYTHONPATH, set by bench_pipeline.py). `make quix-venv`; bench_pipeline.py finds it here.
QUIX_VENV  ?= .venv-quix
QUIX_STAMP := $(QUIX_VENV)/.installed
QUIX_IN    := bench/peers/quix-requirements.in
QUIX_LOCK  := bench/peers/quix-requirements.lock

$(QUIX_STAMP): $(QUIX_LOCK)
	rm -rf $(QUIX_VENV)
	$(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(QUIX_VENV)/bin/python -m pip install --quiet --require-hashes --only-binary=:all: -r $(QUIX_LOCK)
	touch $(QUIX_STAMP)

quix-venv: $(QUIX_STAMP)

# Regenerate both locks (and the Quix peer's) from pyproject.toml, for CPython 3.11 on Linux x86_64 whatever machine
# runs it. Versions already locked stay unless pyproject rules them out; to move them:
# `make lock LOCK_FLAGS=--upgrade` (everything) or `LOCK_FLAGS='--upgrade-package aiohttp'`.
# tests/unit/test_lock.py checks the locks still match pyproject.toml.
LOCK_FLAGS  ?=
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-unknown-linux-gnu
LOCK_HEADER := \# Locked by `make lock` (uv pip compile --generate-hashes) for CPython 3.11 on Linux x86_64.
UV_COMPILE   = $(BIN)/uv pip compile --quiet --no-header --generate-hashes $(LOCK_TARGET) $(LOCK_FLAGS)

# Each lock is compiled into a copy (uv keeps the versions it finds there) and replaces the
# old one only when it differs, so an unchanged lock does not rebuild .venv.
lock: $(STAMP)
	@set -e; for lock in $(LOCK):'' $(DEV_LOCK):'--extra dev'; do \
		file=$${lock%%:*}; extra=$${lock#*:}; \
		if [ -e $$file ]; then cp $$file $$file.new; fi; \
		echo "$(UV_COMPILE) pyproject.toml $$extra -o $$file"; \
		$(UV_COMPILE) pyproject.toml $$extra -o $$file.new; \
		sed -i '1i $(LOCK_HEADER)' $$file.new; \
		if cmp -s $$file.new $$file; then rm $$file.new; echo "$$file unchanged"; \
		else mv $$file.new $$file; echo "$$file updated"; fi; \
	done
	@set -e; file=$(QUIX_LOCK); cp $$file $$file.new; \
	echo "$(UV_COMPILE) $(QUIX_IN) -o $$file"; \
	$(UV_COMPILE) $(QUIX_IN) -o $$file.new; \
	sed -i '1i $(LOCK_HEADER)' $$file.new; \
	if cmp -s $$file.new $$file; then rm $$file.new; echo "$$file unchanged"; \
	else mv $$file.new $$file; echo "$$file updated"; fi

# The locked versions against the Python advisory database (PyPI's JSON API, then OSV).
# Needs network; .ci/run runs it when pypi.org's per-version JSON API answers (README "Dependencies").
audit: $(STAMP)
	$(BIN)/pip-audit --strict --progress-spinner off --disable-pip --require-hashes -r $(DEV_LOCK)

demo: $(STAMP)
	$(BIN)/convstream demo

# The default suite, then the short soak / chaos runs, both on Apache Kafka
# (tests/support/brokers.py; CONVSTREAM_TEST_BROKER=tansu for the quick embedded broker).
test: lint typecheck kafka-jars quix-venv
	$(BIN)/pytest
	$(BIN)/pytest -m "soak and not soak_long"

# Every short soak / chaos run (`make test` runs all but the soak_long ones;
# bench/soak.py is the long form).
soak: $(STAMP) kafka-jars
	$(BIN)/pytest -m soak

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The README's error tables, generated from the code's tables (streams/sinks/error_table.py).
readme-errors: $(STAMP)
	$(BIN)/python -m streams.sinks.error_table

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP) kafka-jars
	$(BIN)/pytest tests/integration tests/e2e

# The chart, dashboard, alert rules and Dockerfile. The rule tests need promtool
# (Debian/Ubuntu: `sudo apt-get install prometheus`; macOS: `brew install prometheus`);
# without it they fail, they are never skipped.
ops: $(STAMP)
	$(BIN)/pytest -m ops tests/ops

# The Apache Kafka broker's jars for tests/support/apache_kafka (needs Java 17+ and Maven:
# `apt-get install openjdk-17-jre-headless maven`). Maven downloads them once (~45 MB) into
# ~/.cache/convstream/kafka-<version>/libs, or $$CONVSTREAM_KAFKA_JARS; later runs reuse it.
# They land in a temp dir first, so an interrupted download never passes for a cache.
KAFKA_POM     := tests/support/apache_kafka/pom.xml
KAFKA_VERSION := $(shell sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' $(KAFKA_POM))
KAFKA_JARS    ?= $(or $(CONVSTREAM_KAFKA_JARS),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/convstream/kafka-$(KAFKA_VERSION)/libs)

# Java and Maven when missing: installed with apt-get when we are root on Debian/Ubuntu,
# otherwise the one command to run is printed and make stops.
JAVA_APT := openjdk-17-jre-headless maven

java-maven:
	@if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(JAVA_APT) for the Apache Kafka test broker"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $(JAVA_APT); \
	else \
		echo "The Apache Kafka test broker needs Java 17+ and Maven. Run:"; \
		echo "    sudo apt-get install $(JAVA_APT)"; \
		exit 2; \
	fi

kafka-jars:
	@if [ -e '$(KAFKA_JARS)/kafka_2.13-$(KAFKA_VERSION).jar' ]; then \
		echo "Apache Kafka $(KAFKA_VERSION) jars already in $(KAFKA_JARS)"; \
	else \
		$(MAKE) --no-print-directory java-maven && \
		rm -rf '$(KAFKA_JARS).partial' && \
		mvn -q -B -Dstyle.color=never -f $(KAFKA_POM) dependency:copy-dependencies \
			-DoutputDirectory='$(KAFKA_JARS).partial' && \
		rm -rf '$(KAFKA_JARS)' && mv '$(KAFKA_JARS).partial' '$(KAFKA_JARS)' && \
		echo "Apache Kafka $(KAFKA_VERSION) jars in $(KAFKA_JARS)"; \
	fi

bench: $(STAMP)
	$(BIN)/python -m bench.bench_core

clean:
	rm -rf $(VENV) $(QUIX_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
