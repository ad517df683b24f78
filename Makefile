# `make demo` and `make test` work on a fresh machine: they create .venv with
# the exact versions of constraints.txt first (once; again when setup.cfg or
# constraints.txt changes). setup.cfg itself declares ranges (for users).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo demo-smoke data benchmarks benchmarks-report docs test test-fast test-deep test-compat lint format clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[data,export,docs,dev]"
	touch $(STAMP)

install: $(STAMP)

## The main job: MNIST-1D teacher -> student with ERM, KD and ECL, offline.
demo: $(STAMP)
	$(BIN)/python examples/mnist1d_distillation.py

demo-smoke: $(STAMP)
	$(BIN)/python examples/mnist1d_distillation.py --smoke

## Fashion-MNIST into Keras' cache, offline: from the installed Debian package, or apt-get download.
data: $(STAMP)
	$(BIN)/python -m benchmarks.data

## Fashion-MNIST into the cache, then the accuracy-vs-time benchmarks over 3 seeds, the recipe ablation, speed (about 5 hours on 2 cores: Fashion-MNIST adds about 2), then BENCHMARKS.md.
benchmarks: $(STAMP) data
	$(BIN)/python -m benchmarks.run_all

benchmarks-report: $(STAMP)
	$(BIN)/python -m benchmarks.run_all --report-only

## The API reference site, offline, into site/ (open site/index.html); warnings are errors.
docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict

## Every test, on both cores (CI runs this; 16½ minutes of tests on 2 quiet cores on 2026-12-08, above the 10-minute goal).
test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=10

## For iteration (under 2 minutes): skips the `large` cases, few hypothesis examples.
test-fast: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 HYPOTHESIS_PROFILE=fast $(BIN)/python -m pytest -q -n 2 --dist worksteal -m "not large"

## Nightly: long random call sequences on one Distiller and crash-safety runs, at the
## `deep` hypothesis size (tests/conftest.py); `make test` runs both at a small size.
test-deep: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 KERAS_ECL_DEEP=1 HYPOTHESIS_PROFILE=deep $(BIN)/python -m pytest -q -n 2 \
	  --hypothesis-show-statistics tests/stateful_test.py tests/crash_safety_test.py

## The compatibility subset in fresh venvs at the oldest supported stack
## (constraints-oldest.txt) and the newest released one (no constraints: pip
## resolves the newest inside setup.cfg's ranges). About 10 minutes with downloads.
COMPAT_STACKS ?= oldest newest
COMPAT_TESTS := tests/keras_compat_test.py tests/distiller_test.py tests/registry_test.py \
	tests/teachers_test.py tests/calibration_test.py tests/export_test.py tests/resume_test.py \
	tests/packaging_test.py
test-compat:
	set -e; for stack in $(COMPAT_STACKS); do \
	  venv=.venv-compat-$$stack; rm -rf $$venv; $(PYTHON) -m venv $$venv; \
	  $$venv/bin/python -m pip install --quiet --upgrade "pip>=24"; \
	  if [ $$stack = newest ]; then constraints=""; else constraints="-c constraints-$$stack.txt"; fi; \
	  $$venv/bin/python -m pip install --quiet $$constraints -e ".[export,test]"; \
	  $$venv/bin/python -m pip list 2>/dev/null | grep -E "^(tensorflow|keras|tensorflow-probability|tf_keras) "; \
	  TF_CPP_MIN_LOG_LEVEL=3 KERAS_ECL_COMPAT_STACK=$$stack $$venv/bin/python -m pytest -q -n 2 \
	    -m "not large" -p no:cacheprovider $(COMPAT_TESTS); \
	done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .venv-compat-* build dist site *.egg-info .pytest_cache .ruff_cache
