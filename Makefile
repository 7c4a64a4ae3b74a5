# The front door: `make demo` runs the main job, `make test` runs every check.
# Both build .venv from nothing on first use (torch's CPU wheel first, so pip never pulls CUDA).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test lint typecheck unit integration bench bench-test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[embedded,dev,fast]'
	touch $(STAMP)

# The bench extra (the peers recall_latency.py times) on top; make test and CI stay without it.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[embedded,dev,fast,bench]'
	touch $(BENCH_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/memory-engine demo

lint: $(STAMP)
	$(BIN)/ruff check memory_engine tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration tests/contract -q -m "not bench_peers"

test: lint typecheck
	$(BIN)/python -m pytest -q -m "not bench_peers"

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/recall_latency.py

# The tests that need the bench extra (recall_latency.py --quick --peers).
bench-test: $(BENCH_STAMP)
	$(BIN)/python -m pytest -q -m bench_peers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
