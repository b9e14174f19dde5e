from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from parley_common.settings import CommonSettings

from .search import DEFAULT_SEARCH_CAPS, SearchCaps


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
    # Cassandra sync serves changes older than this: a change is timed by its writer's clock just
    # before its write is sent, so it may land up to a request timeout later, on a clock up to
    # the skew allowance apart. Unset: exactly that (request timeout + skew allowance); set, it
    # may only be longer.
    history_sync_settle_ms: int | None = Field(default=None, ge=0, le=600_000)
    history_clock_skew_ms: int = Field(default=1_000, ge=0, le=60_000)
    # Cassandra: how long sync's change log keeps a change. A device whose cursor is older gets
    # `sync_cursor_expired` (410) and starts again from the beginning, which is then a snapshot.
    history_changes_retention_days: int = Field(default=90, ge=1, le=3650)
    # What one conversation search may read (both stores: a scan, newest conversations first):
    # conversations looked at and messages compared; older ones past either are not found.
    history_search_max_conversations: int = Field(default=DEFAULT_SEARCH_CAPS.conversations, ge=16, le=20_000)
    history_search_max_messages: int = Field(default=DEFAULT_SEARCH_CAPS.messages, ge=100, le=100_000)

    # "host" or "host:port", comma-separated.
    cassandra_contact_points: str = Field(default="127.0.0.1", min_length=1, max_length=2000)
    cassandra_port: int = Field(default=9042, ge=1, le=65535)
    cassandra_keyspace: str = Field(default="parley", pattern=r"^[a-z][a-z0-9_]{0,47}$")
    cassandra_local_dc: str = Field(default="datacenter1", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    cassandra_replication_factor: int = Field(default=3, ge=1, le=9)
    cassandra_username: str | None = Field(default=None, min_length=1, max_length=256)
    cassandra_password: SecretStr | None = None
    # Per query, on the client; also bounds how late a change can land (history_sync_settle_ms).
    # Above the server's own timeouts (read 5 s, write 2 s by default), so that a slow query
    # comes back as the server's typed timeout rather than the client giving up first.
    cassandra_request_timeout_s: float = Field(default=7.0, gt=0, le=60)
    # The native protocol version, pinned (4 for services that do not speak 5).
    cassandra_protocol_version: Literal[4, 5] = 5
    # TLS to the nodes (most managed Cassandra services require it): the CA bundle to trust
    # (else the system's), and whether a node's certificate must name the host dialled.
    cassandra_tls: bool = False
    cassandra_tls_ca_file: Path | None = None
    cassandra_tls_verify_hostname: bool = True

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> HistorySettings:
        if (self.cassandra_username is None) != (self.cassandra_password is None):
            raise ValueError("set both PARLEY_CASSANDRA_USERNAME and PARLEY_CASSANDRA_PASSWORD, or neither")
        if self.history_sync_settle_ms is not None and self.history_sync_settle_ms < self.minimum_settle_ms():
            raise ValueError(
                "PARLEY_HISTORY_SYNC_SETTLE_MS must be at least the Cassandra request timeout plus"
                f" PARLEY_HISTORY_CLOCK_SKEW_MS ({self.minimum_settle_ms()} ms)"
            )
        if self.cassandra_tls_ca_file is not None and not self.cassandra_tls:
            raise ValueError("PARLEY_CASSANDRA_TLS_CA_FILE is set but PARLEY_CASSANDRA_TLS is not")
        return self

    def minimum_settle_ms(self) -> int:
        return int(self.cassandra_request_timeout_s * 1000) + self.history_clock_skew_ms

    def sync_settle_ms(self) -> int:
        return self.minimum_settle_ms() if self.history_sync_settle_ms is None else self.history_sync_settle_ms

    def search_caps(self) -> SearchCaps:
        return SearchCaps(
            conversations=self.history_search_max_conversations, messages=self.history_search_max_messages
        )

    def contact_points(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.cassandra_contact_points.split(",") if p.strip())
