# One command each from a fresh machine: `make test`, `make bench`, `make train`, `make bench-suite`.
# Each creates the virtualenv $(VENV) if needed, installs the requirements and
# builds aits against the installed torch, then runs. The install is editable
# (-e): `python -m ...` run here, in the source tree, then imports the source
# package together with the compiled extension, and Python edits are live.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test bench train bench-suite

install:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-build-isolation -e .

test: install
	$(BIN)/pytest

bench: install
	$(BIN)/python benchmarks/run.py

# The main job: train on the embedded eccentric binary (e = 0.9), run directory under ./runs/.
train: install
	$(BIN)/python -m aits.train

# Every benchmark in one table (kernels, Part 2 batching, training throughput,
# model-policy and Aarseth-derivative cost, rollout cost per step, few-body
# ensembles vs REBOUND, long-run integrator drift); rows with a target say met or
# MISSED; rows also in benchmark-suite.json. `make bench-suite QUICK=1` runs every
# section shrunk (suite.py --quick: a smoke run, about a minute on 2 cores).
bench-suite: install
	$(BIN)/python benchmarks/suite.py $(if $(filter 1,$(QUICK)),--quick) --json benchmark-suite.json
