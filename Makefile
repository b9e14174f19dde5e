# Parley: `make run` brings the whole system up; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROTOS := $(wildcard proto/parley/v1/*.proto)

.PHONY: install run test unit integration browser-test system-deps test-deps lint proto bench load lock clean k8s-check image

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# `make run` with PARLEY_HISTORY_STORE=cassandra starts a local Cassandra node (var/cassandra).
run: install system-deps
	$(BIN)/python -m parley_dev.run

test: install test-deps lint k8s-check
	$(BIN)/python -m pytest tests

unit: install
	$(BIN)/python -m pytest tests/unit

integration: install system-deps
	$(BIN)/python -m pytest tests/integration

# The web client in headless Chromium (Debian's /usr/bin/chromium, never a downloaded browser).
# `make test` runs these too.
browser-test: install test-deps
	$(BIN)/python -m pytest tests/browser

# Debian's packages the services and tests need (RabbitMQ, Redis, Java 17 and Maven for the
# Cassandra node, and Chromium for the tests): installed with apt when missing and running as
# root, otherwise named with the command that installs them. The tests start and stop the
# servers themselves (testcontainers when a Docker engine answers).
system-deps:
	@tools/system-deps.sh run

test-deps:
	@tools/system-deps.sh test

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy libs/common libs/dev services

# Regenerates libs/contracts from proto/ (the committed code; tests/unit/test_contracts.py fails when stale).
proto: install
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=libs/contracts --pyi_out=libs/contracts \
		--grpc_python_out=libs/contracts $(PROTOS)

bench: install system-deps
	$(BIN)/python -m bench

# A bounded load test on loopback (not in CI): 40 users, 120 conversations, 10 minutes by default
# (LOAD_DURATION_S, LOAD_USERS; e.g. LOAD_DURATION_S=60 make load). Writes bench/results/load.json.
load: install system-deps
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
	rm -rf $(VENV) var .cache tools/cassandra/target .pytest_cache .mypy_cache .ruff_cache
