"""Versioned CQL migrations (migrations/NNNN_name.cql), applied in order by
`python -m parley_history migrate` and recorded in `<keyspace>.schema_migrations`.

Every statement is idempotent (IF NOT EXISTS), so a run that died half-way is finished by
the next one; a file already applied must not change (its checksum is kept and checked).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template

from .cassandra_session import CassandraSession

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.cql$")


class MigrationError(RuntimeError):
    pass


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
        return [s.strip() for s in body.split(";") if s.strip()]


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


async def migrate(session: CassandraSession, keyspace: str, local_dc: str, replication_factor: int) -> list[int]:
    """Apply what is pending, in order; returns the versions applied (none when current)."""
    replication = replication_for(local_dc, replication_factor)
    done = []
    for migration in await pending_migrations(session, keyspace):
        for statement in migration.statements(keyspace, replication):
            await session.execute(statement)
        await session.execute(
            f"INSERT INTO {keyspace}.schema_migrations (version, name, checksum, applied_at) VALUES (%s, %s, %s, %s)",
            (migration.version, migration.name, migration.checksum, datetime.now(UTC)),
        )
        done.append(migration.version)
    return done
