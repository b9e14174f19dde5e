"""Versioned CQL migrations (migrations/NNNN_name.cql), applied in order by
`python -m parley_history migrate` and recorded in `<keyspace>.schema_migrations`.

Safe to run from every replica at once (each history pod runs it before it serves):
- one runner at a time: a lease in `<keyspace>.schema_lock`, taken with a lightweight
  transaction and given a TTL, so a runner that died frees it; the others wait for it, then
  find nothing pending;
- every table is created with a fixed id (`WITH ID`, derived from its keyspace and name), so
  even two runners that raced would create the same table, never one table under two ids;
- DDL goes to one coordinator with a timeout fit for schema changes, and after each statement
  the runner waits until every node agrees on the schema, and stops if they do not.

Every statement is idempotent (IF NOT EXISTS), so a run that died half-way is finished by the
next one; a file already applied must not change (its checksum is kept and checked).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

from parley_common.errors import Unavailable

from .cassandra_session import CassandraSession

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.cql$")
_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\.(\w+)\s*\(", re.IGNORECASE)
# Table ids are uuid5s in this namespace of "keyspace.table".
_TABLE_IDS = uuid.UUID("5a1e0c3e-7d0b-4c59-9a43-2f4b1f6c0e11")

DDL_TIMEOUT_S = 60.0
LOCK_TTL_S = 300
LOCK_WAIT_S = 900.0


class MigrationError(RuntimeError):
    pass


def table_id(keyspace: str, table: str) -> uuid.UUID:
    return uuid.uuid5(_TABLE_IDS, f"{keyspace}.{table}")


def with_fixed_id(statement: str) -> str:
    """A CREATE TABLE with its fixed id; any other statement as it is."""
    match = _CREATE_TABLE.match(statement)
    if match is None:
        return statement
    depth, end = 0, -1
    for i in range(match.end() - 1, len(statement)):
        depth += {"(": 1, ")": -1}.get(statement[i], 0)
        if depth == 0:
            end = i + 1
            break
    if end < 0:
        raise MigrationError(f"unbalanced parentheses in: {statement[:80]}")
    head, tail = statement[:end], statement[end:].strip()
    fixed = f"ID = {table_id(match[1], match[2])}"
    if tail.upper().startswith("WITH "):
        return f"{head} WITH {fixed} AND {tail[5:].strip()}"
    if tail:
        raise MigrationError(f"unexpected text after the columns of {match[1]}.{match[2]}: {tail[:40]}")
    return f"{head} WITH {fixed}"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def statements(self, keyspace: str, replication: str) -> list[str]:
        lines = [line for line in self.text.splitlines() if not line.strip().startswith("--")]
        body = Template("\n".join(lines)).substitute(keyspace=keyspace, replication=replication)
        return [with_fixed_id(s.strip()) for s in body.split(";") if s.strip()]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.cql")):
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.cql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if not found or versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migrations in {directory} must be numbered 1, 2, 3…; found {versions}")
    return found


def replication_for(local_dc: str, replication_factor: int) -> str:
    return f"{{'class': 'NetworkTopologyStrategy', '{local_dc}': {replication_factor}}}"


async def applied_versions(session: CassandraSession, keyspace: str) -> dict[int, str]:
    """Version -> checksum of what the keyspace already has ({} for a new cluster)."""
    tables = await session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s AND table_name = 'schema_migrations'",
        (keyspace,),
    )
    if not tables:
        return {}
    rows = await session.execute(f"SELECT version, checksum FROM {keyspace}.schema_migrations")
    return {int(r["version"]): str(r["checksum"]) for r in rows}


async def pending_migrations(
    session: CassandraSession, keyspace: str, migrations: list[Migration] | None = None
) -> list[Migration]:
    migrations = load_migrations() if migrations is None else migrations
    applied = await applied_versions(session, keyspace)
    for migration in migrations:
        if migration.version in applied and applied[migration.version] != migration.checksum:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name} changed after it was applied;"
                " add a new migration instead"
            )
    return [m for m in migrations if m.version not in applied]


class _Runner:
    """One `migrate` run: its coordinator, its lease, its schema changes."""

    def __init__(self, session: CassandraSession, keyspace: str, owner: str, lock_ttl_s: int) -> None:
        self.session = session
        self.keyspace = keyspace
        self.owner = owner
        self.lock_ttl_s = lock_ttl_s
        self.coordinator = self._pick_coordinator()

    def _pick_coordinator(self) -> Any:
        hosts = [h for h in self.session.cluster.metadata.all_hosts() if h.is_up]
        if not hosts:
            raise MigrationError("no Cassandra node is up to run the migrations on")
        return sorted(hosts, key=lambda h: str(h.endpoint))[0]

    async def ddl(self, statement: str) -> None:
        agreed = await self.session.schema_change(statement, host=self.coordinator, timeout_s=DDL_TIMEOUT_S)
        if not agreed:
            raise MigrationError(
                f"the nodes did not agree on the schema after: {statement.splitlines()[0][:100]}"
                " (check that every node is up and reachable, then run migrate again)"
            )

    async def run(self, statement: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return await self.session.execute(statement, params, host=self.coordinator, timeout=DDL_TIMEOUT_S)

    async def prepare_lock(self, replication: str) -> None:
        # Both idempotent and race-free: a keyspace has no id, and the table's id is fixed.
        await self.ddl(
            f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = {replication} AND durable_writes = true"
        )
        await self.ddl(
            with_fixed_id(
                f"CREATE TABLE IF NOT EXISTS {self.keyspace}.schema_lock"
                " (name text PRIMARY KEY, owner text, since timestamp)"
            )
        )

    async def acquire(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                rows = await self.run(
                    f"INSERT INTO {self.keyspace}.schema_lock (name, owner, since) VALUES ('migrations', %s, %s)"
                    f" IF NOT EXISTS USING TTL {self.lock_ttl_s}",
                    (self.owner, datetime.now(UTC)),
                )
            except Unavailable:
                # The lease's Paxos round timed out (a node just started, or busy): its outcome is
                # unknown, so ask again — a lease taken meanwhile reads back with our owner.
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1.0)
                continue
            if rows[0]["[applied]"] or rows[0].get("owner") == self.owner:
                return
            if time.monotonic() > deadline:
                raise MigrationError(
                    f"another migrate run ({rows[0].get('owner')}) has held the schema lock for over"
                    f" {wait_s:.0f}s; it expires {self.lock_ttl_s}s after its holder stops"
                )
            await asyncio.sleep(1.0)

    async def renew(self) -> None:
        rows = await self.run(
            f"UPDATE {self.keyspace}.schema_lock USING TTL {self.lock_ttl_s} SET since = %s"
            " WHERE name = 'migrations' IF owner = %s",
            (datetime.now(UTC), self.owner),
        )
        if not rows[0]["[applied]"]:
            raise MigrationError("lost the schema lock (it expired): stopping; run migrate again")

    async def release(self) -> None:
        await self.run(
            f"DELETE FROM {self.keyspace}.schema_lock WHERE name = 'migrations' IF owner = %s", (self.owner,)
        )


async def migrate(
    session: CassandraSession,
    keyspace: str,
    local_dc: str,
    replication_factor: int,
    *,
    migrations: list[Migration] | None = None,
    lock_ttl_s: int = LOCK_TTL_S,
    lock_wait_s: float = LOCK_WAIT_S,
) -> list[int]:
    """Apply what is pending, in order, under the schema lock; returns the versions applied
    (none when current, or when another runner applied them meanwhile)."""
    migrations = load_migrations() if migrations is None else migrations
    replication = replication_for(local_dc, replication_factor)
    runner = _Runner(session, keyspace, f"{uuid.uuid4()}", lock_ttl_s)
    if not await asyncio.to_thread(session.cluster.control_connection.wait_for_schema_agreement):
        raise MigrationError("the nodes do not agree on the schema before migrating; check that every node is up")
    await runner.prepare_lock(replication)
    await runner.acquire(lock_wait_s)
    done = []
    try:
        for migration in await pending_migrations(session, keyspace, migrations):
            for statement in migration.statements(keyspace, replication):
                if statement.split(None, 1)[0].upper() in ("CREATE", "ALTER", "DROP"):
                    await runner.ddl(statement)
                else:
                    await runner.run(statement)
                await runner.renew()
            await runner.run(
                f"INSERT INTO {keyspace}.schema_migrations (version, name, checksum, applied_at)"
                " VALUES (%s, %s, %s, %s)",
                (migration.version, migration.name, migration.checksum, datetime.now(UTC)),
            )
            done.append(migration.version)
    finally:
        await runner.release()
    return done
