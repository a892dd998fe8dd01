# The two commands a new user runs: `make run` and `make test`.
# Everything either needs is installed by these targets into .venv.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3
STAMP  := $(VENV)/.sluice-installed
DEVSTAMP := $(VENV)/.sluice-dev-installed

.PHONY: run test check bench install dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(DEVSTAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP) $@

install: $(STAMP)
dev: $(DEVSTAMP)

run: $(STAMP)
	$(VENV)/bin/sluice serve $(ARGS)

test: $(DEVSTAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

check: $(DEVSTAMP)
	$(VENV)/bin/ruff check proxy adapters tests bench
	$(VENV)/bin/mypy

bench: $(DEVSTAMP)
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
