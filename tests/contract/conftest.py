"""The history store contract, run against every backend.

SQLite and Cassandra, the session's cluster (tests/conftest.py: CASSANDRA_CONTACT_POINTS, a
container, or a local node from Maven Central's jars). Each session migrates a keyspace of its
own and drops it afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from parley_dev.cassandra import CassandraEndpoint
from parley_history.cassandra_session import build_cluster
from parley_history.sqlite_store import SqliteHistoryStore
from parley_history.store import HistoryStore
from tests.support.history_stores import CassandraTarget, TestClock, config_for, open_cassandra_store

# Small buckets, so that a test crosses several with a handful of messages.


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
