from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from parley_common.settings import CommonSettings


class HistorySettings(CommonSettings):
    history_grpc_host: str = "127.0.0.1"
    history_grpc_port: int = Field(default=50051, ge=0, le=65535)
    # sqlite: the embedded store (make run, tests); cassandra: production.
    history_store: Literal["sqlite", "cassandra"] = "sqlite"
    history_sqlite_path: Path = Path("var/history.sqlite3")
    # FULL: a commit is on disk before the broker message that caused it is acked.
    history_sqlite_synchronous: str = Field(default="FULL", pattern="^(FULL|NORMAL)$")
    # How many completion events are handled at once.
    history_prefetch: int = Field(default=32, ge=1, le=1000)
    # Cassandra partitions (a conversation's messages, a user's changes) span this much time.
    # Every stored key carries its bucket, so changing it affects new writes only.
    history_bucket_s: int = Field(default=7 * 86_400, ge=1, le=366 * 86_400)
    # Cassandra sync serves changes older than this: longer than a write may take to land.
    history_sync_settle_ms: int = Field(default=10_000, ge=0, le=600_000)

    # "host" or "host:port", comma-separated.
    cassandra_contact_points: str = Field(default="127.0.0.1", min_length=1, max_length=2000)
    cassandra_port: int = Field(default=9042, ge=1, le=65535)
    cassandra_keyspace: str = Field(default="parley", pattern=r"^[a-z][a-z0-9_]{0,47}$")
    cassandra_local_dc: str = Field(default="datacenter1", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    cassandra_replication_factor: int = Field(default=3, ge=1, le=9)
    cassandra_username: str | None = Field(default=None, min_length=1, max_length=256)
    cassandra_password: SecretStr | None = None
    # Per query; also bounds how late a change can land (see history_sync_settle_ms).
    cassandra_request_timeout_s: float = Field(default=5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> HistorySettings:
        if (self.cassandra_username is None) != (self.cassandra_password is None):
            raise ValueError("set both PARLEY_CASSANDRA_USERNAME and PARLEY_CASSANDRA_PASSWORD, or neither")
        if self.history_sync_settle_ms < self.cassandra_request_timeout_s * 1000 and self.history_store == "cassandra":
            raise ValueError("PARLEY_HISTORY_SYNC_SETTLE_MS must be at least the Cassandra request timeout")
        return self

    def contact_points(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.cassandra_contact_points.split(",") if p.strip())
