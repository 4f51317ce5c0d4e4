# The two commands that matter: `make service` (run it locally) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin

.PHONY: service test lint format env bench install-local install-dev install-bench install-node chromium

# PORT goes to the service too: in local mode its links (PUBLIC_URL) follow the port served.
service: install-local  ## run the service on http://localhost:8000, or PORT=... (local mode without a .env)
	PORT=$(PORT) $(BIN)/uvicorn svc.main:app --host $(HOST) --port $(PORT) --no-access-log

test: install-dev install-node chromium  ## run every test
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install-dev  ## ruff, black and mypy, changing nothing
	$(BIN)/ruff check svc tests bench
	$(BIN)/black --check svc tests bench
	$(BIN)/mypy

format: install-dev  ## black, then ruff's fixes
	$(BIN)/black svc tests bench
	$(BIN)/ruff check --fix svc tests bench

bench: install-bench  ## measure the service (bench/results.md, bench/latency.png); not a test
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python -m bench.run $(BENCH_ARGS)

env:  ## copy .env.example to .env (never overwrites an existing .env)
	@if [ -e .env ]; then echo ".env exists; left as it is"; else cp .env.example .env && echo "created .env"; fi

# The browser tests drive Debian's chromium (Playwright downloads no browser here).
# Installed once, as root; otherwise say how, and the browser tests skip (fail under CI=true).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser tests"; \
	    apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is missing (sudo apt-get install chromium): the browser tests skip"; \
	  fi; }

install-local: $(VENV)/.installed-local
install-dev: $(VENV)/.installed-dev
install-bench: $(VENV)/.installed-bench
install-node: node_modules/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-local: requirements.txt requirements-local.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-local.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-local.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.installed-local

$(VENV)/.installed-bench: $(VENV)/.installed-dev requirements-bench.txt
	$(BIN)/pip install -q -r requirements-bench.txt
	touch $@

# Seam's fake server for the smart-lock tests, at the version package-lock.json pins. Without
# npm the tests that need it skip (and fail under CI=true), so this only says so.
node_modules/.installed: package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --no-audit --no-fund --loglevel=error && touch $@; \
	else \
		echo "npm not found: the smart-lock tests need Node.js 18+ and npm"; \
	fi
