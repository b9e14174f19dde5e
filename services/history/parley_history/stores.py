"""The configured history store: opened for serving, or brought to the latest schema."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from .cassandra_migrations import migrate as migrate_cassandra
from .cassandra_migrations import pending_migrations
from .cassandra_session import CassandraConfig, CassandraSession
from .cassandra_store import CassandraHistoryStore
from .settings import HistorySettings
from .sqlite_schema import migrate as migrate_sqlite
from .sqlite_store import SqliteHistoryStore
from .store import HistoryStore


class SchemaNotCurrent(RuntimeError):
    pass


def cassandra_config(settings: HistorySettings) -> CassandraConfig:
    password = settings.cassandra_password.get_secret_value() if settings.cassandra_password else None
    return CassandraConfig(
        contact_points=settings.contact_points(),
        port=settings.cassandra_port,
        local_dc=settings.cassandra_local_dc,
        username=settings.cassandra_username,
        password=password,
        request_timeout_s=settings.cassandra_request_timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
        protocol_version=settings.cassandra_protocol_version,
        tls=settings.cassandra_tls,
        tls_ca_file=settings.cassandra_tls_ca_file,
        tls_verify_hostname=settings.cassandra_tls_verify_hostname,
    )


async def open_store(settings: HistorySettings) -> HistoryStore:
    """The store to serve from; a Cassandra keyspace must already be migrated."""
    if settings.history_store == "sqlite":
        return SqliteHistoryStore(
            settings.history_sqlite_path, settings.history_sqlite_synchronous, search_caps=settings.search_caps()
        )
    keyspace = settings.cassandra_keyspace
    admin = await CassandraSession.connect(cassandra_config(settings))
    try:
        pending = await pending_migrations(admin, keyspace)
    finally:
        await admin.close()
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        raise SchemaNotCurrent(
            f"keyspace {keyspace} lacks migrations {names}: run `python -m parley_history migrate` first"
        )
    session = await CassandraSession.connect(cassandra_config(settings), keyspace)
    return await CassandraHistoryStore.open(
        session,
        bucket_ms=settings.history_bucket_s * 1000,
        settle_ms=settings.sync_settle_ms(),
        retention_ms=settings.history_changes_retention_days * 86_400_000,
        search_caps=settings.search_caps(),
    )


async def migrate_store(settings: HistorySettings) -> list[int]:
    """Apply pending schema migrations to the configured store; the versions applied."""
    if settings.history_store == "sqlite":
        return await asyncio.to_thread(_migrate_sqlite_file, settings.history_sqlite_path)
    session = await CassandraSession.connect(cassandra_config(settings))
    try:
        return await migrate_cassandra(
            session, settings.cassandra_keyspace, settings.cassandra_local_dc, settings.cassandra_replication_factor
        )
    finally:
        await session.close()


def _migrate_sqlite_file(path: Path) -> list[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        return migrate_sqlite(db)
    finally:
        db.close()
