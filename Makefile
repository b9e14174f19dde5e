# Parley: `make run` brings the whole system up; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROTOS := $(wildcard proto/parley/v1/*.proto)

.PHONY: install run test unit integration browser-test browser-deps lint proto bench load lock clean k8s-check image

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m parley_dev.run

test: install browser-deps lint k8s-check
	$(BIN)/python -m pytest tests

unit: install
	$(BIN)/python -m pytest tests/unit

integration: install
	$(BIN)/python -m pytest tests/integration

# The web client in headless Chromium (Debian's /usr/bin/chromium, never a downloaded browser).
# `make test` runs these too.
browser-test: install browser-deps
	$(BIN)/python -m pytest tests/browser

# Debian's Chromium for the browser tests, installed with apt when missing (as root); without it
# the browser tests skip and say so.
browser-deps:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's chromium for the browser tests"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
	    || echo "could not install chromium: the browser tests will be skipped" >&2; \
	else echo "chromium is missing and cannot be installed here: the browser tests will be skipped" >&2; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy libs/common libs/dev services

# Regenerates libs/contracts from proto/ (the committed code; tests/unit/test_contracts.py fails when stale).
proto: install
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=libs/contracts --pyi_out=libs/contracts \
		--grpc_python_out=libs/contracts $(PROTOS)

bench: install
	$(BIN)/python -m bench

# A bounded load test on loopback (not in CI): 40 users, 120 conversations, 10 minutes by default
# (LOAD_DURATION_S, LOAD_USERS; e.g. LOAD_DURATION_S=60 make load). Writes bench/results/load.json.
load: install
	$(BIN)/python -m bench.load

# Builds every kustomization in deploy/k8s, validates it against the Kubernetes schemas offline,
# checks every PARLEY_* variable against the services' settings classes and lints the Dockerfile.
# Its tools (pinned in tools/k8s-check-requirements.txt) are installed into .venv/k8s-tools once.
k8s-check: install
	$(BIN)/python -m tools.k8s_check

# The one container image of every service (Dockerfile), tagged with the commit; needs a Docker engine.
IMAGE ?= parley
image:
	@docker info >/dev/null 2>&1 || { echo "make image needs a Docker engine, and none answers here" >&2; exit 1; }
	docker build -t $(IMAGE):$$(git describe --always --dirty 2>/dev/null || echo dev) -t $(IMAGE):latest .

# Re-pins requirements.lock from what the venv holds (after changing pyproject.toml dependencies).
lock:
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
