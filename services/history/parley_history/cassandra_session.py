"""A Cassandra session for asyncio: LOCAL_QUORUM, prepared statements, awaited results.

cassandra-driver does its I/O on its own event thread; `execute_async` futures are bridged to
the asyncio loop through `call_soon_threadsafe`, so no query ever blocks the loop. Connecting
and preparing block, so they run in a worker thread (once, at start-up).

Consistency (docs/history-data-model.md has the table): every read and write is LOCAL_QUORUM,
lightweight transactions use LOCAL_SERIAL, so a write acknowledged to a caller is seen by
every later read in the data centre. Every statement but a lightweight transaction is
idempotent and may be retried by the driver or sent again by a redelivered event.

Errors: a timeout, an unavailable replica set or no reachable host is `Unavailable`
(`store_unavailable`, retryable: the write may or may not have landed, and sending it again is
safe); a read or write *failure* (a replica answered with an error, e.g. too many tombstones)
is not retryable, since it recurs: it is a `ParleyError` with code `store_failure`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cassandra
from cassandra import ConsistencyLevel, ProtocolVersion
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, ResponseFuture, Session
from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy
from cassandra.query import BatchStatement, BatchType, PreparedStatement, dict_factory

from parley_common.errors import ParleyError, Unavailable

Row = dict[str, Any]

# What a caller may retry: the cluster was busy or unreachable, the write's outcome unknown.
_TRANSIENT = (
    cassandra.Unavailable,
    cassandra.Timeout,  # ReadTimeout, WriteTimeout (and CDC write failures)
    cassandra.OperationTimedOut,
    NoHostAvailable,
)
# A replica answered with an error: sending the same statement again fails the same way.
_FAILURES = (cassandra.CoordinationFailure, cassandra.FunctionFailure)

# The server-side timeouts a client's must stay above (Cassandra's defaults): a query that
# the server times out then comes back as its typed timeout, not as a client-side guess.
SERVER_TIMEOUT_S = 10.0


class StoreFailure(ParleyError):
    """A replica answered with an error (e.g. a read that met too many tombstones): not retried."""

    code = "store_failure"


@dataclass(frozen=True)
class CassandraConfig:
    contact_points: tuple[str, ...]
    port: int = 9042
    local_dc: str = "datacenter1"
    username: str | None = None
    password: str | None = None
    request_timeout_s: float = 12.0
    connect_timeout_s: float = 10.0
    # The native protocol version, pinned so that a driver upgrade never negotiates another.
    protocol_version: int = 5
    # TLS to the nodes: on with `tls`; `tls_ca_file` is the CA bundle to trust (else the
    # system's); `tls_verify_hostname` checks that a node's certificate names the host dialled.
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_verify_hostname: bool = True
    # Schema changes: how long to wait for every node to agree on the schema after each one.
    schema_agreement_wait_s: int = 60


def ssl_context_for(config: CassandraConfig) -> ssl.SSLContext | None:
    if not config.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.tls_ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = config.tls_verify_hostname
    return context


def _hosts(config: CassandraConfig) -> list[str | tuple[str, int]]:
    hosts: list[str | tuple[str, int]] = []
    for point in config.contact_points:
        host, sep, port = point.rpartition(":")
        # "host:port" names its own port; a bare host (or an IPv6 address) uses `port`.
        hosts.append((host, int(port)) if sep and point.count(":") == 1 and port.isdigit() else point)
    return hosts


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
    return Cluster(
        contact_points=_hosts(config),
        port=config.port,
        auth_provider=auth,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=config.connect_timeout_s,
        protocol_version=ProtocolVersion.V5 if config.protocol_version == 5 else ProtocolVersion.V4,
        # With check_hostname on, the driver checks each node's certificate against the
        # address it dialled (server_hostname).
        ssl_context=ssl_context_for(config),
        max_schema_agreement_wait=config.schema_agreement_wait_s,
        # A node that comes back is used again within seconds (the default backs off to 10 min).
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=5.0),
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

    async def execute(self, statement: Any, params: Sequence[Any] = (), **options: Any) -> list[Row]:
        """Run one statement; all of its rows, every page fetched (`options`: the driver's
        execute_async keywords, e.g. `timeout`, `host`)."""
        return await _all_pages(self.session.execute_async(statement, params, **options))

    async def schema_change(self, cql: str, *, host: Any, timeout_s: float) -> bool:
        """Run a DDL statement on one coordinator (`host`), with a timeout fit for schema
        changes; True once every node agrees on the schema afterwards."""
        future = self.session.execute_async(cql, timeout=timeout_s, host=host)
        await _all_pages(future)
        return bool(future.is_schema_agreed)

    async def batch(self, items: Sequence[tuple[PreparedStatement, Sequence[Any]]]) -> None:
        """A logged batch: every statement is applied, or none (small rows only: no content)."""
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        for statement, params in items:
            batch.add(statement, params)
        await _all_pages(self.session.execute_async(batch))

    async def close(self) -> None:
        await asyncio.to_thread(self.cluster.shutdown)


async def _all_pages(future: ResponseFuture) -> list[Row]:
    """Every row of the result: the driver's callbacks fire once per page, on its own thread."""
    loop = asyncio.get_running_loop()
    page: asyncio.Future[list[Row]] = loop.create_future()

    def resolve(rows: Any) -> None:
        if not page.done():
            page.set_result(list(rows or []))

    def reject(exc: BaseException) -> None:
        if not page.done():
            page.set_exception(exc)

    future.add_callbacks(
        lambda rows: loop.call_soon_threadsafe(resolve, rows),
        lambda exc: loop.call_soon_threadsafe(reject, exc),
    )
    rows: list[Row] = []
    try:
        while True:
            rows += await page
            if not future.has_more_pages:
                return rows
            # A fresh slot for the next page before it is asked for: its callback may fire at once.
            page = loop.create_future()
            future.start_fetching_next_page()
    except _TRANSIENT as exc:
        raise Unavailable(f"history store unavailable: {type(exc).__name__}", code="store_unavailable") from exc
    except _FAILURES as exc:
        raise StoreFailure(f"history store failure: {type(exc).__name__}") from exc
