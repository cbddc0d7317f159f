# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

## Create the virtualenv, install lightd, and run it on its embedded defaults (127.0.0.1:8070).
run: $(VENV)/.installed-run
	$(BIN)/lightd serve

## Install the test dependencies, then lint, type-check and run the whole test suite.
test: $(VENV)/.installed-test lint
	$(BIN)/pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

## The pool and claim figures (start real daemons on loopback; wrk is used when installed).
bench: $(VENV)/.installed-test
	$(BIN)/python bench/pool_bench.py
	$(BIN)/python bench/claim_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
