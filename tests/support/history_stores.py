"""The history stores under contract test: a test clock, and the session's Cassandra keyspace."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from parley_dev.cassandra import CassandraEndpoint
from parley_history.cassandra_migrations import migrate
from parley_history.cassandra_session import CassandraConfig, CassandraSession
from parley_history.cassandra_store import CassandraHistoryStore

# Small buckets, so that a test crosses several with a handful of messages.
BUCKET_MS = 1_000


class TestClock:
    """The stores' clock for change times: one millisecond per reading, and jumps on demand."""

    __test__ = False

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        self.now_ms += 1
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


@dataclass
class CassandraTarget:
    config: CassandraConfig
    keyspace: str = field(default_factory=lambda: "contract_" + uuid.uuid4().hex[:12])
    migrated: bool = False


def config_for(endpoint: CassandraEndpoint) -> CassandraConfig:
    return CassandraConfig(
        contact_points=endpoint.contact_points,
        local_dc=endpoint.local_dc,
        request_timeout_s=20.0,
        connect_timeout_s=20.0,
    )


async def open_cassandra_store(target: CassandraTarget, clock: TestClock) -> CassandraHistoryStore:
    """The store on the session's contract keyspace, migrated on first use; settle 0: these
    tests write and read on one clock, with no concurrent writers."""
    if not target.migrated:
        admin = await CassandraSession.connect(target.config)
        try:
            await migrate(admin, target.keyspace, target.config.local_dc, replication_factor=1)
        finally:
            await admin.close()
        target.migrated = True
    session = await CassandraSession.connect(target.config, target.keyspace)
    return await CassandraHistoryStore.open(session, bucket_ms=BUCKET_MS, settle_ms=0, clock=clock)
