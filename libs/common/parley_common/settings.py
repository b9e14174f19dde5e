"""Settings base: every service reads its configuration through a subclass of `CommonSettings`.

Only pydantic-settings reads the environment (prefix `PARLEY_`). Bad configuration fails at
start-up with one clear line per problem, never later.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from parley_common.models import DEFAULT_MODELS_FILE, ModelRegistry


class CommonSettings(BaseSettings):
    # Inputs stay out of validation errors: a bad value may be (or sit next to) a secret.
    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore", frozen=True, hide_input_in_errors=True)

    # Prefix of every exchange, queue and Redis key, so that several systems (a dev run and a
    # test run) can share one broker and one Redis without seeing each other's traffic.
    namespace: str = Field(default="parley", pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    # Connections for short Redis commands (callers wait for one when all are busy), and for
    # blocking replay-log reads (one per stream being resumed or waited on).
    redis_max_connections: int = Field(default=64, ge=1, le=10_000)
    redis_max_followers: int = Field(default=10_000, ge=1, le=100_000)
    # The replay log of a response (what a client resumes from with Last-Event-ID): kept this
    # long after its newest frame while the answer is being generated, this long once it ended
    # (enough to resume a finished answer), and at most this many frames (older ones are dropped;
    # a resume from before the oldest kept frame ends with a `replay_truncated` error).
    replay_ttl_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    replay_finished_ttl_s: int = Field(default=900, ge=10, le=7 * 24 * 3600)
    replay_max_frames: int = Field(default=50_000, ge=100, le=10_000_000)
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    # How long a service waits at start-up for the broker before giving up.
    connect_timeout_s: float = Field(default=30.0, gt=0, le=600)
    # On SIGTERM: how long in-flight work may take before it is handed back.
    shutdown_grace_s: float = Field(default=20.0, gt=0, le=600)
    # OpenTelemetry: OTLP/HTTP collector base URL (e.g. http://otel-collector:4318); empty = no export.
    otlp_endpoint: str = ""
    # Prometheus metrics of services without an HTTP server; 0 = not served.
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # The model registry (see config/models.yaml).
    models_file: Path = DEFAULT_MODELS_FILE

    @model_validator(mode="after")
    def _replay_retention(self) -> Self:
        if self.replay_finished_ttl_s > self.replay_ttl_s:
            raise ValueError("PARLEY_REPLAY_FINISHED_TTL_S is longer than PARLEY_REPLAY_TTL_S")
        return self

    def model_registry(self) -> ModelRegistry:
        """The registry, or exit(2) saying what is wrong with it."""
        try:
            return ModelRegistry.load(self.models_file)
        except ValueError as exc:
            sys.stderr.write(f"invalid configuration: PARLEY_MODELS_FILE: {exc}\n")
            raise SystemExit(2) from None


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """Build settings from the environment, or exit(2) naming every bad variable."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = []
        for err in exc.errors():
            name = prefix + "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {name}: {err['msg']}")
        sys.stderr.write(f"invalid configuration for {cls.__name__}:\n" + "\n".join(lines) + "\n")
        raise SystemExit(2) from None
