# steerlens — two commands for a newcomer: `make demo` (set up + main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-fast bench results clean-venv

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $@

$(VENV)/.model: $(VENV)/.installed
	$(PY) -m steerlens fetch-model
	touch $@

## setup: virtualenv with pinned dependencies, the default model (fetched and dequantised once), and the
## benchmark data from the Hugging Face hub when no data directory is found (offline: a message, not a failure)
setup: $(VENV)/.model
	@$(PY) -m steerlens fetch-data --if-missing || echo "setup: continuing without benchmark data (make demo needs it; see the line above)"

## demo: the main job on the default model and data
demo: setup
	$(PY) -m steerlens demo

## test: unit tests (tiny random model) and integration tests (default model)
test: setup
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

## bench: speed / memory benchmarks written to benchmarks/results/*.json
bench: setup
	$(PY) benchmarks/run.py --out benchmarks/results

## results: baseline sweeps on the default model (CAA/RepE safety, ITI truthfulness; ~45 min on 2 cores),
## best setting of each chosen on val and reported on test (results/RESULTS.md); then the README's
## generated tables are checked against their saved sources (scripts/readme_tables.py)
results: setup
	$(PY) scripts/sweep_baselines.py
	$(PY) scripts/readme_tables.py --check

clean-venv:
	rm -rf $(VENV)
