# One image for every Parley service; the command picks the service:
#   python -m parley_gateway | parley_orchestrator | parley_worker | parley_history | parley_media
# (deploy/k8s sets `command` per Deployment; the default runs the gateway.)
#
# `make image` builds it (tools/containers): with Docker where an engine answers, on the base
# below; with podman otherwise, on localhost/parley-base:bookworm, Debian bookworm and its
# Python 3.11 built with debootstrap from Debian's packages (`make image-base`), since no image
# registry is reachable here. Either base must have python3 with venv, groupadd and useradd.
#
# The default base is pinned to a full patch release (Python 3.11.14 on Debian 12 bookworm), so
# a rebuild does not silently move to another Python. Its digest is not pinned here: this
# repository is written and checked offline, where digests cannot be looked up. Pin it in CI
# for byte-for-byte reproducible builds, with the digest `docker buildx imagetools inspect
# python:3.11.14-slim-bookworm` prints:
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:…
# Move the tag to a newer 3.11 patch release for security fixes (and run `make test` on it).
#
# The build reaches PyPI through the machine's own pip configuration, passed as build secrets
# (never stored in a layer): `pip.conf` at /etc/pip.conf and the CA bundle it names.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: a virtualenv holding Parley and its pinned runtime dependencies -----------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python3 -m venv /opt/parley

WORKDIR /src
# The lock file pins every third-party package; `-c` applies those pins to the runtime
# dependencies only (the dev tools in the lock are not installed). The dependencies are a layer
# of their own, installed from pyproject.toml's list before any code is copied, so a change to
# the code reinstalls Parley only.
COPY pyproject.toml requirements.lock ./
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca-certificates \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > runtime-requirements.txt \
    && /opt/parley/bin/pip install --no-cache-dir -c requirements.lock -r runtime-requirements.txt
COPY libs/ libs/
COPY services/ services/
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca-certificates \
    /opt/parley/bin/pip install --no-cache-dir --no-deps -c requirements.lock . \
    && /opt/parley/bin/pip check

# --- runtime: the virtualenv on the same slim base, run as an unprivileged user ------------
FROM ${PYTHON_IMAGE}

# A fixed numeric uid/gid, so that Kubernetes' runAsNonRoot can verify it without resolving names.
# /app exists in the image itself (buildah's WORKDIR does not create it, and with a read-only
# root filesystem nothing can at run time).
RUN groupadd --system --gid 10001 parley \
    && useradd --system --uid 10001 --gid parley --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin parley \
    && mkdir -p /app

COPY --from=build /opt/parley /opt/parley
# The default model registry; Kubernetes mounts the ConfigMap parley-models over /etc/parley.
COPY config/models.yaml /etc/parley/models.yaml

# The root filesystem is read-only in Kubernetes: no bytecode writes, nothing buffered.
ENV PATH=/opt/parley/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PARLEY_MODELS_FILE=/etc/parley/models.yaml

WORKDIR /app
USER 10001:10001

# gateway HTTP, history gRPC, media gRPC
EXPOSE 8080 50051 50052

CMD ["python", "-m", "parley_gateway"]
