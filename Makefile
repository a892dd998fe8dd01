# The two commands a new user runs: `make run` and `make test`.
# Everything either needs is installed by these targets into .venv.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3
STAMP  := $(VENV)/.sluice-installed
DEVSTAMP := $(VENV)/.sluice-dev-installed

.PHONY: run test test-clients check bench install dev clean install-service uninstall-service

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
	tests/services/install-packages postgresql:'/usr/lib/postgresql/*/bin/initdb' \
		systemd:systemd-analyze tinyproxy:/usr/bin/tinyproxy dante-server:/usr/sbin/danted
	$(PY) -m pytest $(PYTEST_ARGS)

# Real clients through the gateway, to fake providers of another dialect: Claude Code and Gemini
# CLI, downloaded from npm into $(CLIENTS) (not part of `make test`; needs node and the registry).
CLIENTS ?= .clients
CLIENT_PACKAGES ?= @anthropic-ai/claude-code @google/gemini-cli

test-clients: $(DEVSTAMP)
	npm install --prefix $(CLIENTS) --no-audit --no-fund --loglevel=error $(CLIENT_PACKAGES)
	@$(CLIENTS)/node_modules/.bin/claude --version
	@$(CLIENTS)/node_modules/.bin/gemini --version
	SLUICE_CLIENTS=$(abspath $(CLIENTS))/node_modules/.bin $(PY) -m pytest tests/clients $(PYTEST_ARGS)

check: $(DEVSTAMP)
	$(VENV)/bin/ruff check proxy adapters tests bench
	$(VENV)/bin/mypy

bench: $(DEVSTAMP)
	$(PY) -m bench $(BENCH_ARGS)

# Run as root: a systemd service from this checkout (deploy/install.sh; see README). Options
# go in SERVICE_ARGS, e.g. SERVICE_ARGS="--prefix /srv/sluice --no-start" or "--purge".
install-service:
	deploy/install.sh $(SERVICE_ARGS)

uninstall-service:
	deploy/uninstall.sh $(SERVICE_ARGS)

clean:
	rm -rf $(VENV) $(CLIENTS) .pytest_cache .mypy_cache .ruff_cache
