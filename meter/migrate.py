"""`meter migrate`: apply migrations/NNNN_name.sql in order, once each, under an advisory lock."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

from meter import queries
from meter.errors import MigrationError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Path:
    """The repository's migrations/ in a checkout, or the copy packaged into the wheel."""
    checkout = Path(__file__).resolve().parent.parent / "migrations"
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("meter") / "_migrations"))


def load(directory: Path | None = None) -> list[Migration]:
    """Read and order the migration files; refuse gaps, duplicates and stray names."""
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"migration file name must be NNNN_name.sql: {path.name}")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migrations must be numbered 1, 2, …; {expected:04d} is missing")
    return found


async def migrate(conn: asyncpg.Connection, directory: Path | None = None) -> list[Migration]:
    """Apply pending migrations; return those applied. Idempotent and safe to run concurrently."""
    wanted = load(directory)
    # Session-level lock: a second `meter migrate` waits here until the first has finished,
    # then finds everything applied.
    await conn.execute(queries.LOCK_MIGRATIONS, queries.MIGRATION_LOCK_KEY)
    try:
        await conn.execute(queries.CREATE_SCHEMA_MIGRATIONS)
        applied = {r["version"]: r for r in await conn.fetch(queries.APPLIED_MIGRATIONS)}
        done: list[Migration] = []
        for migration in wanted:
            row = applied.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} was changed after "
                        "it was applied; add a new migration instead"
                    )
                continue
            # Each file and its record commit together: a crash leaves it wholly applied or not.
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    queries.RECORD_MIGRATION, migration.version, migration.name, migration.checksum
                )
            log.info(
                "migration applied",
                extra={"version": migration.version, "migration": migration.name},
            )
            done.append(migration)
        return done
    finally:
        await conn.execute(queries.UNLOCK_MIGRATIONS, queries.MIGRATION_LOCK_KEY)


async def require_schema(conn: asyncpg.Connection, directory: Path | None = None) -> None:
    """Refuse to run on a database that lacks a migration this code needs (or holds a different
    version of one): every process calls this at startup, so a deploy that skipped
    `meter migrate` fails at once with what to do, instead of answering 500s on queries that
    name columns the schema does not have yet. Migrations newer than the code are fine: they
    are additive, which is what lets the previous release keep running during a rollout."""
    applied: dict[int, str] = {}
    if await conn.fetchval(queries.SCHEMA_MIGRATIONS_EXISTS) is not None:
        rows = await conn.fetch(queries.APPLIED_MIGRATIONS)
        applied = {r["version"]: r["checksum"] for r in rows}
    behind = [m for m in load(directory) if applied.get(m.version) != m.checksum]
    if behind:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in behind)
        raise MigrationError(
            f"the database schema does not match this release (missing or changed: {names});"
            " run `meter migrate` first"
        )
