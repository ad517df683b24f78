# `make demo` and `make test` work on a fresh machine: they create .venv with
# the pinned dependencies first (once; again when setup.cfg changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo demo-smoke benchmarks benchmarks-report docs test test-fast lint format clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e ".[data,export,docs,dev]"
	touch $(STAMP)

install: $(STAMP)

## The main job: MNIST-1D teacher -> student with ERM, KD and ECL, offline.
demo: $(STAMP)
	$(BIN)/python examples/mnist1d_distillation.py

demo-smoke: $(STAMP)
	$(BIN)/python examples/mnist1d_distillation.py --smoke

## Accuracy-vs-time benchmarks over 3 seeds, the recipe ablation, speed (about 3 hours on 2 cores), then BENCHMARKS.md.
benchmarks: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

benchmarks-report: $(STAMP)
	$(BIN)/python -m benchmarks.run_all --report-only

## The API reference site, offline, into site/ (open site/index.html); warnings are errors.
docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict

## Every test, on both cores (CI runs this; under 10 minutes on 2 cores).
test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest -q -n 2 --durations=10

## For iteration (under 2 minutes): skips the `large` cases, few hypothesis examples.
test-fast: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 HYPOTHESIS_PROFILE=fast $(BIN)/python -m pytest -q -n 2 -m "not large"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .ruff_cache
