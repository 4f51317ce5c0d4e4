"""Applying ``supabase/migrations/``."""

from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "supabase" / "migrations"


async def apply_migrations(dsn: str) -> list[str]:
    """Apply every SQL file of the migrations folder, in order; each is idempotent.

    An advisory lock keeps two processes starting at once from running the DDL together.
    """
    applied = []
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("select pg_advisory_lock(hashtext('qwipsvc.migrations'))")
        try:
            for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
                await connection.execute(path.read_text())
                applied.append(path.name)
        finally:
            await connection.execute("select pg_advisory_unlock(hashtext('qwipsvc.migrations'))")
    finally:
        await connection.close()
    return applied
