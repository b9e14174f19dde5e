"""A Cassandra session for asyncio: LOCAL_QUORUM, prepared statements, awaited results.

cassandra-driver does its I/O on its own event thread; `execute_async` futures are bridged to
the asyncio loop through `call_soon_threadsafe`, so no query ever blocks the loop. Connecting
and preparing block, so they run in a worker thread (once, at start-up).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cassandra
from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, ResponseFuture, Session
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import BatchStatement, BatchType, PreparedStatement, dict_factory

from parley_common.errors import Unavailable

Row = dict[str, Any]

# What a caller may retry: the cluster was busy or unreachable, the write's outcome unknown.
_TRANSIENT = (cassandra.RequestExecutionException, cassandra.OperationTimedOut, NoHostAvailable)


@dataclass(frozen=True)
class CassandraConfig:
    contact_points: tuple[str, ...]
    port: int = 9042
    local_dc: str = "datacenter1"
    username: str | None = None
    password: str | None = None
    request_timeout_s: float = 5.0
    connect_timeout_s: float = 10.0


def build_cluster(config: CassandraConfig) -> Cluster:
    """A Cluster (not yet connected) for `config`: LOCAL_QUORUM, token-aware in the local DC."""
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.local_dc)),
        consistency_level=ConsistencyLevel.LOCAL_QUORUM,
        serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
        request_timeout=config.request_timeout_s,
        row_factory=dict_factory,
    )
    auth = None
    if config.username:
        auth = PlainTextAuthProvider(username=config.username, password=config.password or "")
    hosts: list[str | tuple[str, int]] = []
    for point in config.contact_points:
        host, sep, port = point.rpartition(":")
        # "host:port" names its own port; a bare host (or an IPv6 address) uses `port`.
        hosts.append((host, int(port)) if sep and point.count(":") == 1 and port.isdigit() else point)
    return Cluster(
        contact_points=hosts,
        port=config.port,
        auth_provider=auth,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=config.connect_timeout_s,
    )


class CassandraSession:
    """One connected cluster; `execute` and `batch` are awaitable and raise parley Unavailable
    for errors worth retrying (timeouts, unavailable replicas, no host)."""

    def __init__(self, cluster: Cluster, session: Session) -> None:
        self.cluster = cluster
        self.session = session

    @classmethod
    async def connect(cls, config: CassandraConfig, keyspace: str | None = None) -> CassandraSession:
        def run() -> CassandraSession:
            cluster = build_cluster(config)
            try:
                return cls(cluster, cluster.connect(keyspace))
            except BaseException:
                cluster.shutdown()
                raise

        try:
            return await asyncio.to_thread(run)
        except _TRANSIENT as exc:
            raise Unavailable(f"cannot reach Cassandra: {exc}", code="store_unavailable") from exc

    async def prepare(self, cql: str, idempotent: bool = True) -> PreparedStatement:
        """Prepare once at start-up; `idempotent` lets the driver retry it on another replica."""
        statement = await asyncio.to_thread(self.session.prepare, cql)
        statement.is_idempotent = idempotent
        return statement

    async def execute(self, statement: Any, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; its rows (first page only: queries here always carry a LIMIT)."""
        future = self.session.execute_async(statement, params)
        return await _settled(future)

    async def batch(self, items: Sequence[tuple[PreparedStatement, Sequence[Any]]]) -> None:
        """A logged batch: every statement is applied, or none (small rows only: no content)."""
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        for statement, params in items:
            batch.add(statement, params)
        await _settled(self.session.execute_async(batch))

    async def close(self) -> None:
        await asyncio.to_thread(self.cluster.shutdown)


async def _settled(future: ResponseFuture) -> list[Row]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[list[Row]] = loop.create_future()

    def resolve(rows: Any) -> None:
        if not done.done():
            done.set_result(list(rows or []))

    def reject(exc: BaseException) -> None:
        if not done.done():
            done.set_exception(exc)

    # Both callbacks run on the driver's event thread: hand the outcome to the loop's thread.
    future.add_callbacks(
        lambda rows: loop.call_soon_threadsafe(resolve, rows),
        lambda exc: loop.call_soon_threadsafe(reject, exc),
    )
    try:
        return await done
    except _TRANSIENT as exc:
        raise Unavailable(f"history store unavailable: {type(exc).__name__}", code="store_unavailable") from exc
