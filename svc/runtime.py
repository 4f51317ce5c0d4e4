"""Builds what the settings name (the database now; Stripe, the mailer, the locks) for the
app's lifespan and for the operator CLI, and closes it again through an AsyncExitStack."""

import asyncio
import logging
from contextlib import AsyncExitStack
from decimal import Decimal

from svc import local_mode
from svc.database_accessor import Database, PodNameTaken, PostgresDatabase, apply_migrations
from svc.env import Settings
from svc.models import NewPod

logger = logging.getLogger(__name__)

DEMO_PODS = (
    NewPod(name="pod1", address="1 Demo Street, London", price=Decimal("0.25"), currency="gbp"),
    NewPod(name="test", address="Test Bench, London", price=Decimal("0.10"), currency="gbp"),
)


async def database_url(settings: Settings, stack: AsyncExitStack) -> tuple[str, str]:
    """The connection string to use, and a line saying what it is."""
    if settings.DATABASE_URL is not None:
        return settings.DATABASE_URL.get_secret_value(), "Postgres at DATABASE_URL"
    if settings.uses_embedded_database:
        data_dir = settings.LOCAL_DATA_DIR
        dsn, release = await asyncio.to_thread(local_mode.start_embedded_postgres, data_dir)
        # Explicitly, not at exit: uvicorn ends by re-raising SIGTERM, which skips atexit.
        stack.push_async_callback(asyncio.to_thread, release)
        return dsn, f"embedded Postgres, data in {data_dir / 'pgdata'}"
    raise local_mode.LocalServiceError(
        "SUPABASE_URL and SUPABASE_KEY are not supported yet: set DATABASE_URL to the "
        "project's connection string"
    )


async def open_database(settings: Settings, stack: AsyncExitStack) -> tuple[Database, str]:
    """The database the settings name, with the schema applied in local mode."""
    dsn, description = await database_url(settings, stack)
    if settings.is_local:
        await apply_migrations(dsn)
    db = await PostgresDatabase.connect(dsn, pool_size=settings.DATABASE_POOL_SIZE)
    stack.push_async_callback(db.close)
    if settings.uses_embedded_database:
        await seed_demo_pods(db)
    return db, description


async def seed_demo_pods(db: Database) -> None:
    for pod in DEMO_PODS:
        try:
            await db.insert_pod(pod)
        except PodNameTaken:
            pass
