# Parley: `make run` brings the whole system up; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROTOS := $(wildcard proto/parley/v1/*.proto)

.PHONY: install run test unit integration browser-test system-deps test-deps lint proto bench load lock clean k8s-check image
.PHONY: image-base images test-containers k8s-play

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# `make run` with PARLEY_HISTORY_STORE=cassandra starts a local Cassandra node (var/cassandra).
run: install system-deps
	$(BIN)/python -m parley_dev.run

# The local-servers suites, then the same system in containers (test-containers, k8s-play).
# Two pytest-xdist workers (tests/conftest.py: what stays together on one), then the `serial`
# tests, which restart the local RabbitMQ and Redis every other test uses, on their own.
test: install test-deps lint k8s-check
	$(BIN)/python -m pytest tests --ignore=tests/containers -m 'not serial' -n 2 --durations=40
	$(BIN)/python -m pytest tests --ignore=tests/containers -m serial --durations=5
	$(MAKE) test-containers k8s-play

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

# The web client's vendored libraries (KaTeX, highlight.js; axe-core for the browser tests), fetched
# with npm at the versions pinned in tools/vendor-web.sh and checked against tools/vendor-web.sha256.
.PHONY: vendor-web
vendor-web:
	tools/vendor-web.sh

# Regenerates libs/contracts from proto/ (the committed code; tests/unit/test_contracts.py fails when stale).
proto: install
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=libs/contracts --pyi_out=libs/contracts \
		--grpc_python_out=libs/contracts $(PROTOS)

# Every benchmark in bench/__main__.py (one: `$(BIN)/python -m bench peer`). `peer` installs the
# LiteLLM proxy into its own virtualenv, .cache/litellm-venv (never .venv), on first use and fails
# saying why when it cannot; `profile` attaches py-spy (dev extras) to the services.
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

# Images (tools/containers): with Docker where an engine answers, else with podman as root (runc,
# a containers.conf written for this machine). No registry is reachable here, so the base is
# Debian bookworm + Python 3.11 from Debian's packages with debootstrap (image-base: reused when
# it exists, FORCE=1 rebuilds it); builds get the host's pip and apt configuration as secrets.
# image: the one image of every service (Dockerfile), localhost/parley:<commit> and :latest.
# images: that, and the RabbitMQ, Redis, Cassandra and S3 images the tests' containers run.
CONTAINERS := $(BIN)/python -m tools.containers
image-base: install
	@tools/system-deps.sh containers
	$(CONTAINERS) base $(if $(FORCE),--force)

image: image-base
	$(CONTAINERS) app

images: image
	$(CONTAINERS) infra

# The containers path of the fixtures, for real: podman's Docker API on a socket of its own
# (never the default Docker paths, which other test runs on this machine would pick up) as
# DOCKER_HOST for this command only. PARLEY_INFRA=containers makes a missing engine a failure.
# The subset: the image itself, a turn, resume, faults, and history on Cassandra.
CONTAINER_TESTS ?= tests/containers tests/integration/test_chat_turn.py tests/integration/test_streams.py \
	tests/integration/test_faults.py tests/integration/test_cassandra_end_to_end.py
test-containers: images
	PARLEY_INFRA=containers PARLEY_REQUIRE=all $(CONTAINERS) with-api -- $(BIN)/python -m pytest $(CONTAINER_TESTS) \
		--deselect tests/integration/test_cassandra_end_to_end.py::test_cassandra_stopped_during_turns_then_back_keeps_every_answer_once

# deploy/k8s/overlays/local played with `podman kube play`: every probe passes, a turn and a
# resume through the gateway's published port, then everything is torn down.
k8s-play: images
	$(CONTAINERS) play

# Re-pins requirements.lock from what the venv holds (after changing pyproject.toml dependencies).
lock:
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) var .cache tools/cassandra/target .pytest_cache .mypy_cache .ruff_cache
