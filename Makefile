# Parley: `make run` brings the whole system up; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROTOS := $(wildcard proto/parley/v1/*.proto)

.PHONY: install run test unit integration browser-test lint proto bench load lock clean k8s-check

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m parley_dev.run

test: install lint k8s-check
	$(BIN)/python -m pytest tests

unit: install
	$(BIN)/python -m pytest tests/unit

integration: install
	$(BIN)/python -m pytest tests/integration

# The web client in headless Chromium (Debian's /usr/bin/chromium; .ci/run installs it). `make test` runs these too.
browser-test: install
	$(BIN)/python -m pytest tests/browser

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

# Re-pins requirements.lock from what the venv holds (after changing pyproject.toml dependencies).
lock:
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
