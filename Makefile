# The two quick-start commands: `make up` (serve the bundled model) and `make test` (everything).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup up test test-fast lint bench-gateway

setup:
	@scripts/bootstrap.sh

up: setup
	$(VENV)/bin/deepfleet up

test: setup
	scripts/setup-test-deps.sh
	scripts/run-tests.sh

test-fast: setup
	$(PY) -m pytest -m "not slow" -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy --strict src/deepfleet

bench-gateway: setup
	$(PY) benchmarks/gateway_vs_direct.py
