"""Builds what the settings name (the database, Stripe, the mailer) for the app's
lifespan and for the operator CLI, and closes it again through an AsyncExitStack."""

import asyncio
import logging
from contextlib import AsyncExitStack
from decimal import Decimal

from svc import payments_manager, seam_accessor
from svc.database_accessor import (
    Database,
    DatabaseUnavailable,
    PodNameTaken,
    PostgresDatabase,
    SupabaseDatabase,
    apply_migrations,
)
from svc.email_manager import EmailSender, FileSender, Mailer, SmtpSender
from svc.env import ConfigurationError, Settings
from svc.local import LocalServiceError, localstripe, port_is_open, stop_process
from svc.local.postgres import start_embedded_postgres
from svc.metrics import Metrics
from svc.models.records import NewPod
from svc.services import Outbox, Services

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
        dsn, release = await asyncio.to_thread(start_embedded_postgres, data_dir)
        # Explicitly, not at exit: uvicorn ends by re-raising SIGTERM, which skips atexit.
        stack.push_async_callback(asyncio.to_thread, release)
        return dsn, f"embedded Postgres, data in {data_dir / 'pgdata'}"
    raise ConfigurationError(
        "SUPABASE_URL and SUPABASE_KEY reach the project over its HTTP API, which cannot run "
        "SQL: apply supabase/migrations/ with `supabase db push`, or set DATABASE_URL to the "
        "project's connection string"
    )


async def open_database(settings: Settings, stack: AsyncExitStack) -> tuple[Database, str]:
    """The database the settings name, with the schema applied in local mode."""
    if settings.uses_supabase_api:
        assert settings.SUPABASE_URL is not None and settings.SUPABASE_KEY is not None
        supabase = await SupabaseDatabase.connect(
            settings.SUPABASE_URL,
            settings.SUPABASE_KEY.get_secret_value(),
            pool_size=settings.DATABASE_POOL_SIZE,
        )
        stack.push_async_callback(supabase.close)
        # No migration here, even in local mode: the operator applies the schema (README).
        return supabase, f"Supabase at {settings.SUPABASE_URL} (PostgREST, service-role key)"
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


async def start_local_stripe(settings: Settings, stack: AsyncExitStack) -> str:
    """localstripe for local mode: reuse one already on the port, else start our own."""
    base = settings.stripe_api_base
    assert base is not None
    port = settings.LOCALSTRIPE_PORT
    if await asyncio.to_thread(localstripe.is_localstripe, base):
        return f"localstripe at {base} (already running)"
    if port_is_open("127.0.0.1", port):
        raise LocalServiceError(
            f"port {port} is taken by something that is not localstripe; "
            "set LOCALSTRIPE_PORT to a free port"
        )
    data_dir = settings.LOCAL_DATA_DIR
    process = await asyncio.to_thread(
        localstripe.start_localstripe,
        port,
        state_file=data_dir / "localstripe.pickle",
        log_file=data_dir / "localstripe.log",
    )
    stack.callback(stop_process, process)
    # localstripe signs and posts payment events like Stripe does; let them exercise the
    # same webhook path as production.
    await asyncio.to_thread(
        localstripe.register_localstripe_webhook,
        base,
        url=f"{settings.PUBLIC_URL}/webhook/stripe",
        secret=settings.stripe_webhook_secret,
    )
    return f"localstripe at {base}, started with the service"


async def open_services(
    settings: Settings, stack: AsyncExitStack, metrics: Metrics | None = None
) -> tuple[Services, list[str]]:
    """Everything the lifecycle talks to, and a line per stand-in for local mode's banner;
    what it does counted in `metrics` (the app's)."""
    metrics = metrics or Metrics()
    db, database = await open_database(settings, stack)
    if settings.uses_local_stripe:
        payments = await start_local_stripe(settings, stack)
    else:
        payments = f"Stripe at {settings.stripe_api_base or 'api.stripe.com'}"
    if settings.stripe_test_mode:
        # Said at every start, and on every page: test keys charge no real card.
        logger.warning(
            "stripe.test_mode app_env=%s: TEST MODE, Stripe test keys charge no real card",
            settings.APP_ENV,
        )
    stripe_client, http_client = payments_manager.build_client(settings, metrics)
    stack.push_async_callback(http_client.close_async)
    sender: EmailSender
    if settings.uses_smtp:
        sender = SmtpSender(settings)
        email = f"SMTP at {settings.SMTP_HOST}:{settings.SMTP_PORT}"
    else:
        sender = FileSender(settings.OUTBOX_DIR)
        email = f"written to {settings.OUTBOX_DIR}/ and printed to this log"
    seam = seam_accessor.build_client(settings, metrics)
    if seam is not None:
        stack.push_async_callback(seam.close)
        locks = f"Seam at {settings.seam_endpoint} for pods with a seam_device_id"
    else:
        locks = "access codes generated locally"
        await warn_of_locks_left_out(db)
    services = Services(
        settings=settings,
        db=db,
        stripe=stripe_client,
        mailer=Mailer(settings, sender),
        outbox=Outbox(),
        seam=seam,
        metrics=metrics,
    )
    return services, [
        f"database : {database}",
        (
            f"payments : {payments} (test card 4242 4242 4242 4242)"
            if settings.uses_local_stripe
            else f"payments : {payments}"
        ),
        f"e-mail   : {email}",
        f"locks    : {locks}",
    ]


async def warn_of_locks_left_out(db: Database) -> None:
    """Pods with a lock get codes their lock does not know while SEAM_API_KEY is unset."""
    try:
        pods = await db.list_pods()
    except DatabaseUnavailable:
        return  # a warning is not worth refusing to start; /readyz says what is wrong
    with_lock = [pod.name for pod in pods if pod.seam_device_id]
    if with_lock:
        logger.warning("locks.disabled reason=no_seam_api_key pods=%s", ",".join(with_lock))
