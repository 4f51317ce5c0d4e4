"""Applying ``supabase/migrations/``: each file once, in order, recorded where the Supabase
CLI records it.

A migration file never changes once committed; a change of schema is a new file. The
versions applied are rows of ``supabase_migrations.schema_migrations``, the table
``supabase db push`` reads and writes (version = the file name's leading number, name =
the rest), so `db init` and the CLI skip what the other applied, in any order.
"""

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "supabase" / "migrations"

# The CLI's own rule for a migration's file name; it skips any other file, and so do we.
_FILE_NAME = re.compile(r"^([0-9]+)_(.*)\.sql$")

# As the CLI creates the table (and upgrades one an older CLI made).
_TRACKING_TABLE = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
    version text not null primary key
);
alter table supabase_migrations.schema_migrations add column if not exists statements text[];
alter table supabase_migrations.schema_migrations add column if not exists name text;
"""

# One lock for every process that runs `apply_migrations` on this database, so that two
# replicas starting at once do not both apply a version. (The CLI takes no such lock:
# run it while no replica is starting.)
_LOCK = "select pg_advisory_lock(hashtext('qwipsvc.migrations'))"
_UNLOCK = "select pg_advisory_unlock(hashtext('qwipsvc.migrations'))"


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def file_name(self) -> str:
        return self.path.name


def list_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files of `directory`, in the order they apply."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            logger.warning("migrations.skipped file=%s: not <version>_<name>.sql", path.name)
            continue
        migrations.append(Migration(version=match[1], name=match[2], path=path))
    return migrations


async def applied_versions(connection: asyncpg.Connection) -> set[str]:
    """The versions recorded on the database (none when nothing was ever recorded)."""
    exists = await connection.fetchval(
        "select to_regclass('supabase_migrations.schema_migrations') is not null"
    )
    if not exists:
        return set()
    rows = await connection.fetch("select version from supabase_migrations.schema_migrations")
    return {row["version"] for row in rows}


async def apply_migrations(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not yet recorded on the database, in order; the file names applied.

    Each file runs in one transaction with the row that records it, so a failed file leaves
    neither a half schema nor a record. A database set up before versions were recorded
    gets every file again, once: 0001 and 0002 are written to apply over themselves.
    """
    applied = []
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(_LOCK)
        try:
            await connection.execute(_TRACKING_TABLE)
            done = await applied_versions(connection)
            for migration in list_migrations(directory):
                if migration.version in done:
                    continue
                sql = migration.path.read_text()
                async with connection.transaction():
                    await connection.execute(sql)
                    # The whole file as its one statement: the CLI splits it, but reads only
                    # the version back.
                    await connection.execute(
                        "insert into supabase_migrations.schema_migrations"
                        " (version, statements, name) values ($1, $2, $3)",
                        migration.version,
                        [sql],
                        migration.name,
                    )
                logger.info(
                    "migrations.applied version=%s name=%s", migration.version, migration.name
                )
                applied.append(migration.file_name)
        finally:
            await connection.execute(_UNLOCK)
    finally:
        await connection.close()
    return applied
