"""The history store contract, run against every backend.

SQLite and Cassandra, the session's cluster (tests/conftest.py: CASSANDRA_CONTACT_POINTS, a
container, or a local node from Maven Central's jars). Each session migrates a keyspace of its
own and drops it afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from parley_dev.cassandra import CassandraEndpoint
from parley_history.cassandra_migrations import migrate
from parley_history.cassandra_session import CassandraConfig, CassandraSession, build_cluster
from parley_history.cassandra_store import CassandraHistoryStore
from parley_history.sqlite_store import SqliteHistoryStore
from parley_history.store import HistoryStore

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


@pytest.fixture(scope="session")
def cassandra_target(cassandra: CassandraEndpoint) -> Iterator[CassandraTarget]:
    """A keyspace of this session's on the session's Cassandra, dropped afterwards."""
    target = CassandraTarget(config_for(cassandra))
    yield target
    if target.migrated:
        cluster = build_cluster(target.config)
        try:
            cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {target.keyspace}", timeout=60)
        finally:
            cluster.shutdown()


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


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture(params=["sqlite", "cassandra"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, clock: TestClock) -> AsyncIterator[HistoryStore]:
    opened: HistoryStore
    if request.param == "sqlite":
        opened = SqliteHistoryStore(tmp_path / "history.sqlite3", synchronous="NORMAL", clock=clock)
    else:
        opened = await open_cassandra_store(request.getfixturevalue("cassandra_target"), clock)
    yield opened
    await opened.close()


@pytest.fixture
def ns() -> str:
    """A prefix for this test's user and conversation ids: the Cassandra keyspace is shared."""
    return uuid.uuid4().hex[:8]
