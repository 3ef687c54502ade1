# The README's two commands. Each sets up .venv from scratch if needed (torch 2.13.0 CPU first).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo figures notebooks lint docs test test-fast bench bench-scale bench-scale-quick bench-scale-huge sweep clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# Main job: SVI vs CAVI on the shipped data, then regenerate every figure in figures/.
demo: setup
	$(BIN)/ppl-gmm demo
	$(BIN)/ppl-gmm figures

figures: setup
	$(BIN)/ppl-gmm figures

# Lint, format check and type check (the habits every change keeps); `test` adds the docs, then the whole suite.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The documentation site, warnings as errors (notebooks rendered from their stored outputs).
docs: setup
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html

test: lint docs
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -n 2 -q

# Locally, without the tests marked slow (CI runs them all).
test-fast: setup
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -n 2 -q -m "not slow"

# Re-execute both notebooks at full size and store their outputs (a few minutes).
notebooks: setup
	$(BIN)/python notebooks/build.py

# The adversarial sweep of every public function and command-line option (about 3 minutes).
sweep: setup
	$(BIN)/python tools/sweep.py

bench: setup
	$(BIN)/python benchmarks/bench_cavi.py
	$(BIN)/python benchmarks/bench_svi.py
	$(BIN)/python benchmarks/bench_vb.py
	$(BIN)/python benchmarks/bench_nuts.py
	$(BIN)/python benchmarks/bench_scale.py

# Issue 10's scale table (in-memory / .npy / Dask, N = 1e6, 1e7) and contention ratios; a smoke run;
# the 1e8-row target (writes a 1.6 GB .npy to a temporary directory, then deletes it).
bench-scale: setup
	$(BIN)/python benchmarks/bench_scale.py
bench-scale-quick: setup
	$(BIN)/python benchmarks/bench_scale.py --quick
bench-scale-huge: setup
	$(BIN)/python benchmarks/bench_scale.py --huge --no-contention

clean:
	rm -rf $(VENV) build *.egg-info
