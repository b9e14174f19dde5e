"""The history store contract, run against every backend.

SQLite always. Cassandra when one is reachable: the cluster named by CASSANDRA_CONTACT_POINTS
("host" or "host:port", comma-separated; CASSANDRA_LOCAL_DC, default datacenter1), else a
testcontainers Cassandra when a Docker engine answers; otherwise those tests skip, saying why.
Each session migrates a keyspace of its own and drops it afterwards.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from parley_dev.infra import docker_available
from parley_history.cassandra_migrations import migrate
from parley_history.cassandra_session import CassandraConfig, CassandraSession, build_cluster
from parley_history.cassandra_store import CassandraHistoryStore
from parley_history.sqlite_store import SqliteHistoryStore
from parley_history.store import HistoryStore

# Small buckets, so that a test crosses several with a handful of messages.
BUCKET_MS = 1_000
CASSANDRA_IMAGE = "cassandra:4.1"


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
    config: CassandraConfig | None
    why_not: str = ""
    keyspace: str = field(default_factory=lambda: "contract_" + uuid.uuid4().hex[:12])
    migrated: bool = False


def _from_environment() -> CassandraConfig | None:
    points = os.environ.get("CASSANDRA_CONTACT_POINTS", "").strip()
    if not points:
        return None
    return CassandraConfig(
        contact_points=tuple(p.strip() for p in points.split(",") if p.strip()),
        local_dc=os.environ.get("CASSANDRA_LOCAL_DC", "datacenter1"),
        request_timeout_s=20.0,
        connect_timeout_s=20.0,
    )


@pytest.fixture(scope="session")
def cassandra_target() -> Iterator[CassandraTarget]:
    config = _from_environment()
    if config is not None:
        target = CassandraTarget(config)
        yield target
        _drop_keyspace(target)
        return
    if not docker_available():
        yield CassandraTarget(None, "no Cassandra: CASSANDRA_CONTACT_POINTS is unset and no Docker engine answers")
        return
    # testcontainers warns about its own deprecated internals; those warnings are not ours.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.community.cassandra import CassandraContainer

        container = CassandraContainer(CASSANDRA_IMAGE).start()
    try:
        points = tuple(f"{host}:{port}" for host, port in container.get_contact_points())
        yield CassandraTarget(
            CassandraConfig(
                contact_points=points,
                local_dc=container.get_local_datacenter(),
                request_timeout_s=20.0,
                connect_timeout_s=20.0,
            )
        )
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            container.stop()


def _drop_keyspace(target: CassandraTarget) -> None:
    if not target.migrated or target.config is None:
        return
    cluster = build_cluster(target.config)
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {target.keyspace}")
    finally:
        cluster.shutdown()


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture(params=["sqlite", "cassandra"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: TestClock, cassandra_target: CassandraTarget
) -> AsyncIterator[HistoryStore]:
    opened: HistoryStore
    if request.param == "sqlite":
        opened = SqliteHistoryStore(tmp_path / "history.sqlite3", synchronous="NORMAL", clock=clock)
    else:
        config = cassandra_target.config
        if config is None:
            pytest.skip(cassandra_target.why_not)
        if not cassandra_target.migrated:
            admin = await CassandraSession.connect(config)
            try:
                await migrate(admin, cassandra_target.keyspace, config.local_dc, replication_factor=1)
            finally:
                await admin.close()
            cassandra_target.migrated = True
        session = await CassandraSession.connect(config, cassandra_target.keyspace)
        # settle 0: these tests write and read on one clock, with no concurrent writers.
        opened = await CassandraHistoryStore.open(session, bucket_ms=BUCKET_MS, settle_ms=0, clock=clock)
    yield opened
    await opened.close()


@pytest.fixture
def ns() -> str:
    """A prefix for this test's user and conversation ids: the Cassandra keyspace is shared."""
    return uuid.uuid4().hex[:8]
