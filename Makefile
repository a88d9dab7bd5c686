# One command each from a fresh machine: `make test`, `make bench`.
# Each creates the virtualenv $(VENV) if needed, installs the requirements and
# builds aits against the installed torch, then runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test bench

install:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-build-isolation .

test: install
	$(BIN)/pytest

bench: install
	$(BIN)/python benchmarks/run.py
