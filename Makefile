# qpipe — two commands do all set-up:  `make run`  and  `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch first and pinned: a bare `torch` requirement would pull the newest CUDA build (GBs).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.qpipe-installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install run test test-python test-future-clock test-edge test-deploy e2e e2e-browser lint typecheck format bench clean

install: $(STAMP)  ## create .venv and install qpipe with dev tools (idempotent)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "qpipe needs Python >= 3.11 (set PYTHON=python3.11)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

run: install  ## start the demo site, Dagster UI + daemon and the QStash receiver on local defaults
	@# compiles the backtest kernels into numba's cache on first use (seconds when already cached)
	$(PY) -m qpipe_dagster.backtest.warm
	$(PY) -m qpipe_dagster.devstack

test: install lint typecheck test-python test-edge test-deploy  ## lint, typecheck, then every test: Python, edge/ and the Docker stack

test-python: install e2e-browser
	@# docker-compose (v1, Debian) validates docker-compose.yml offline; the test skips with a reason without it.
	@command -v docker-compose >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq docker-compose >/dev/null 2>&1; } || true
	@# A throwaway PostgreSQL cluster runs the inbox contract tests on the Postgres backend too.
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1; } || true
	@# Real Prometheus (with promtool) and Alertmanager run the alert-rule and alert-delivery tests.
	@command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null 2>&1; } || echo "make test: prometheus/prometheus-alertmanager not installed (needs root for apt-get): their tests skip" >&2
	$(PY) -m pytest -q -rs

# The Python suite with every process's wall clock a year ahead (libfaketime's preload library,
# shipped in the PyPI package `libfaketime`; Debian's 0.9.10 breaks Python's time.sleep when the
# monotonic clock is left alone). A test that mixes a fixed date with the wall clock fails here.
FUTURE_CLOCK ?= +400d
test-future-clock: install  ## the Python tests (not the browser or Docker ones) with the clock a year ahead
	eval "$$($(PY) -c 'import libfaketime; libfaketime.main()')" && FAKETIME="$(FUTURE_CLOCK)" \
	  $(PY) -m pytest -q -rs -p no:cacheprovider --ignore=qpipe_dagster_tests/e2e --ignore=qpipe_dagster_tests/deploy

e2e-browser: install  ## make sure Chromium is there for the UI test (apt, when root and allowed)
	@$(PY) -m qpipe_dagster_tests.e2e.browser --install

e2e: install e2e-browser  ## only the Dagster UI browser test (screenshots: test-artifacts/e2e/)
	$(PY) -m pytest qpipe_dagster_tests/e2e -m e2e -q -rs

test-deploy: install  ## the production Docker Compose stack end to end (skipped, with the reason, without Docker)
	@deploy/test/test-deploy.sh $(PY)

test-edge:
	@command -v npm >/dev/null || { echo "make test-edge: npm not found; install Node.js 20 to run the edge/ tests" >&2; exit 1; }
	@if [ -f edge/package.json ]; then cd edge && npm ci --no-audit --no-fund --loglevel=error && npm test; else echo "edge/: no package.json yet"; fi

lint: install  ## ruff check and ruff format --check
	$(VENV)/bin/ruff check qpipe_dagster qpipe_dagster_tests webhook_sensor bench
	$(VENV)/bin/ruff format --check qpipe_dagster qpipe_dagster_tests webhook_sensor bench

typecheck: install  ## pyright, standard mode, over qpipe_dagster and webhook_sensor ([tool.pyright])
	$(VENV)/bin/pyright -p pyproject.toml  # explicit: pyright prefers any pyrightconfig.json found above the repo

format: install
	$(VENV)/bin/ruff check --fix qpipe_dagster qpipe_dagster_tests webhook_sensor bench
	$(VENV)/bin/ruff format qpipe_dagster qpipe_dagster_tests webhook_sensor bench

bench: install  ## every benchmark (needs ../shared/data for the real-data ones)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .dagster_home edge/node_modules
