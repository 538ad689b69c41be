# trainkit: `make train` and `make test` work on a fresh machine with only Python.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup train test test-slow test-all lint bench bench-gpu clean

## Bytecode: pip compiles every module of every package it installs, which took 42 of its 76 s here; most
## are never imported. So pip compiles nothing, the core that every command imports is compiled once below,
## and the rest by the first process that imports it -- which is why bytecode is written under make even
## where the shell says PYTHONDONTWRITEBYTECODE (it is written into .venv and __pycache__/ only).
export PYTHONDONTWRITEBYTECODE :=
CORE_IMPORTS := import tensorflow, keras, trainkit.cli

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e ".[examples,test,bench]"
	@echo "compiling the modules every command imports"
	@$(BIN)/python -c "$(CORE_IMPORTS)" 2>/dev/null || $(BIN)/python -c "$(CORE_IMPORTS)"
	@touch $(STAMP)

setup: $(STAMP)

## Train the default recipe (digits_cnn: sklearn's bundled digits, no download) into runs/digits_cnn.
train: setup
	$(BIN)/trainkit train digits_cnn

## Test processes (pytest-xdist), each given whole test files so that a file's shared runs are trained once.
## Files go out in the order conftest.py gives (the heaviest first), not xdist's order by test count.
## Three on two cores: much of a test's time is waiting on the processes it starts (a kill, a cluster, an
## evaluator at idle priority), which another worker fills. Measured here on 2 cores: one worker -> two saved
## about a third; three saved another 4-5% over two (10:15 against 10:39, and 10:16 against 10:52); four were
## slower than two.
TEST_WORKERS ?= 3
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

## The tests a change is checked with: ruff, then every test not marked slow (about 6 minutes on 2 cores).
## The slow ones -- whole recipes trained to their accuracy, clusters of processes, servers, every
## documented command -- take as long again: `make test-slow` runs them, and CI runs both (.ci/run).
test: setup
	$(BIN)/ruff check .
	$(PYTEST) -m "not slow"

## Only the tests marked slow (CI runs them after `make test`).
test-slow: setup
	$(PYTEST) -m slow

## Everything in one pytest session: ruff, the fast tests and the slow ones.
test-all: setup
	$(BIN)/ruff check .
	$(PYTEST)

lint: setup
	$(BIN)/ruff check .

## Benchmarks: input wait of the CNN recipes, trainkit vs Keras fit vs hand-written loops (the loop, then the
## whole job in fresh processes), then cost as the data grows; writes BENCHMARKS.md. A few minutes each.
bench: setup
	$(BIN)/python benchmarks/input_wait.py
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/job.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/streamed.py

## On a machine with a GPU (prints one line and exits 0 without one): trainkit vs Keras fit per precision and XLA.
bench-gpu: setup
	$(BIN)/python benchmarks/accelerator.py

clean:
	rm -rf runs .pytest_cache
