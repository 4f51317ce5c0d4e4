"""Migrations only grow, and `db init` and the Supabase CLI agree on what is applied.

`db init` runs as the operator runs it (`python -m svc db init` with DATABASE_URL), and the
CLI is the real `supabase` of package.json (`npm ci`), each against a database of its own.
"""

import asyncio
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from svc.database_accessor import MIGRATIONS_DIR, PostgresDatabase, list_migrations
from svc.models.records import NewPod, StartSessionRequest
from svc.types import PaymentStatus
from tests.conftest import ROOT, unavailable, with_database

SUPABASE_CLI = ROOT / "node_modules" / ".bin" / "supabase"

# A committed migration never changes: a change of schema is a new file. A database that
# applied a file is never told that its text changed, so an edit would reach only new ones.
# A new file is pinned here when it is committed.
PINNED = {
    "0001_init.sql": ("eb22d717f226faf8a0eb9632c2ff934782b9847f7bb2857945a4ba2a5a261e84"),
    "0002_access_code_work.sql": (
        "04abe3790e588a85d88a70614ce54d70880c7a1b16f012fcc848089dd168bb99"
    ),
    "0003_service_only_and_grants.sql": (
        "3d24822460cc89ea3870e7c75cb3073700da08eb8a83ab31810cd8a85477ebb1"
    ),
    "0004_booking_limits.sql": ("4b2b5128df87eb28718eff131179a3b44ab9138ce08ce437c0ee65b115b7728a"),
    "0005_setup_intent_outcomes.sql": (
        "77c2a45d92a745043f130a1fda50a70c1985f6bd765c7dc95f2b7db3cbe76a70"
    ),
    "0006_email_dead_letters.sql": (
        "9c16b38d775ed736c7fcc66fbe615f9902697a891fb460c84f21f48742a21015"
    ),
    "0007_card_holds.sql": ("d6a94f6006e0483b0f2b0602a6a41ad7cb1663204dd1d41fa4217edc2bcce15f"),
    "0008_booking_wait_within_window.sql": (
        "b11dbd39474920b8900a7de8b540dfa3d9d98c89020b3d2206b49b483b5867bf"
    ),
    "0009_recovery_payments.sql": (
        "996a9460f6f1f06c970fe1d878a424ddc11b3c978817001c99eaf2f5a926ac1a"
    ),
    "0010_refunds_and_disputes.sql": (
        "f55f868c97a71decf95478feffb0284058004ab9b13ed50c49500b27741c5f6c"
    ),
    "0011_seam_events_and_pod_health.sql": (
        "f563031d738ce933b964dcc968c5a122bab37241ddb6357f9b0d3a9adf76a928"
    ),
    "0012_backup_codes_and_reminders.sql": (
        "0ccc84e547b0f275279078680cab86e2c44244b75eaee62b04bb1a0de10b37bd"
    ),
    "0013_operator_console.sql": (
        "0a07c7aee601e0059572cce6032c8e77a2aecedb892a8d8604a7508d9ae1d815"
    ),
    "0014_service_gauges.sql": ("93234f9be855d4957c44fd654e30814b2bf1ba94e9e1c6b6a1f40df8ab5ffa57"),
    "0015_session_of_access_code.sql": (
        "09ff9e78bcbce5dedf1d1fda5c046a9066f54a9289271dfe142329febc2279c1"
    ),
    "0016_console_refunds_and_health.sql": (
        "b2bf34bd8c452fad50b74bd058d106887b4c3cd448a67758191ca9dffa8211d4"
    ),
    "0017_start_refuses_pods_out_of_service.sql": (
        "b0c36de3bff4e9b2f79c4aff1ea84db4af18693bc0d85400a57e862b012c7e86"
    ),
}

ALL_APPLIED = (
    f"applied {', '.join(m.file_name for m in list_migrations())} to Postgres at DATABASE_URL\n"
)
NOTHING_TO_APPLY = "nothing to apply: every migration is recorded on Postgres at DATABASE_URL\n"

# What a schema is made of, to compare two databases or one before and after.
CATALOGUE = """
select 'function ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') '
       || md5(pg_get_functiondef(p.oid)) || ' ' || coalesce(array_to_string(p.proacl, ','), '')
from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'public'
union all
select 'column ' || table_schema || '.' || table_name || '.' || column_name || ' ' || data_type
       || ' ' || is_nullable || ' ' || coalesce(column_default, '')
from information_schema.columns where table_schema in ('public', 'supabase_migrations')
union all
select 'index ' || indexdef from pg_indexes
where schemaname in ('public', 'supabase_migrations')
union all
select 'constraint ' || conrelid::regclass || ' ' || pg_get_constraintdef(oid)
from pg_constraint where connamespace = 'public'::regnamespace
union all
select 'policy ' || tablename || ' ' || policyname || ' ' || coalesce(qual, '')
from pg_policies where schemaname = 'public'
order by 1
"""


def test_committed_migrations_never_change() -> None:
    found = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in MIGRATIONS_DIR.glob("*.sql")
    }
    assert found == PINNED


def test_every_migration_file_has_a_version_and_a_name() -> None:
    files = sorted(path.name for path in MIGRATIONS_DIR.glob("*.sql"))
    listed = list_migrations()
    assert [migration.file_name for migration in listed] == files
    assert [(m.version, m.name) for m in listed][:2] == [
        ("0001", "init"),
        ("0002", "access_code_work"),
    ]
    assert len({migration.version for migration in listed}) == len(listed)


async def new_database(server_url: str) -> str:
    name = f"qwip_migrations_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, dsn: str) -> None:
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'drop database if exists "{dsn.rsplit("/", 1)[1]}" with (force)')
    finally:
        await admin.close()


@pytest.fixture
async def empty_database(postgres_server_url: str) -> AsyncIterator[str]:
    """A new database with nothing in it; dropped afterwards."""
    dsn = await new_database(postgres_server_url)
    yield dsn
    await drop_database(postgres_server_url, dsn)


async def db_init(dsn: str) -> tuple[int, str, str]:
    """`python -m svc db init`, as the operator runs it."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STRIPE_", "DATABASE_", "SUPABASE_", "APP_ENV"))
    }
    env.update(DATABASE_URL=dsn, PYTHONPATH=str(ROOT))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "svc",
        "db",
        "init",
        cwd=ROOT / "tests",  # no .env here
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def supabase_db_push(dsn: str, workdir: Path) -> str:
    """`supabase db push` of the project's migrations, as the operator runs it."""
    if not SUPABASE_CLI.exists():
        unavailable("the Supabase CLI is not installed (npm ci installs it from package.json)")
    # The CLI reads supabase/migrations under its workdir and keeps state in supabase/.temp:
    # a copy keeps that state out of the checkout.
    shutil.copytree(MIGRATIONS_DIR, workdir / "supabase" / "migrations")
    process = await asyncio.create_subprocess_exec(
        str(SUPABASE_CLI),
        "db",
        "push",
        "--workdir",
        str(workdir),
        "--db-url",
        f"{dsn}?sslmode=disable",
        "--yes",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, output.decode()
    return output.decode()


async def query(dsn: str, sql: str) -> list[Any]:
    connection = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


async def recorded(dsn: str) -> list[Any]:
    return await query(
        dsn, "select version, name, statements from supabase_migrations.schema_migrations"
    )


async def versions(dsn: str) -> list[Any]:
    return await query(
        dsn, "select version, name from supabase_migrations.schema_migrations order by 1"
    )


async def contents(dsn: str) -> list[Any]:
    return await query(
        dsn,
        "select 'pod', to_jsonb(p) from pods p union all "
        "select 'session', to_jsonb(s) from pod_sessions s union all "
        "select 'event', to_jsonb(e) from stripe_events e union all "
        "select 'email', to_jsonb(m) - 'payload' from email_outbox m order by 1, 2",
    )


EVERY_VERSION = [(m.version, m.name) for m in list_migrations()]


async def add_a_finished_session(dsn: str) -> None:
    db = await PostgresDatabase.connect(dsn, pool_size=1)
    try:
        pod = await db.insert_pod(
            NewPod(name="pod1", address="1 Demo Street", price=Decimal("0.25"), currency="gbp")
        )
        session_id = uuid4()
        await db.start_session(
            StartSessionRequest(
                event_id="evt_1",
                event_type="setup_intent.succeeded",
                session_id=session_id,
                setup_intent_id="seti_1",
                pod_id=pod.id,
                user_email="ada@example.com",
                customer_id="cus_1",
                payment_method="pm_1",
                access_code="123456",
                free_minutes=0,
                started_email=None,
                unavailable_email=None,
            )
        )
        await db.end_session(session_id, max_minutes=180, lease_seconds=60)
        outcome = await db.record_payment(
            session_id,
            cost_pence=263,
            status=PaymentStatus.SUCCEEDED,
            payment_intent_id="pi_1",
            error=None,
            emails=[],
        )
        assert outcome == "recorded"
    finally:
        await db.close()


async def test_a_database_from_before_versions_were_recorded_upgrades_in_place(
    empty_database: str,
) -> None:
    # As `db init` left a database before it recorded versions: the files as plain SQL.
    connection = await asyncpg.connect(empty_database)
    try:
        for name in PINNED:
            await connection.execute((MIGRATIONS_DIR / name).read_text())
    finally:
        await connection.close()
    await add_a_finished_session(empty_database)
    before = await contents(empty_database)
    assert [kind for kind, _ in before] == ["event", "pod", "session"]

    assert await db_init(empty_database) == (0, ALL_APPLIED, "")
    assert await contents(empty_database) == before
    assert await versions(empty_database) == EVERY_VERSION
    records, schema = await recorded(empty_database), await query(empty_database, CATALOGUE)

    assert await db_init(empty_database) == (0, NOTHING_TO_APPLY, "")
    assert await recorded(empty_database) == records
    assert await query(empty_database, CATALOGUE) == schema
    assert await contents(empty_database) == before


async def test_db_init_of_an_empty_database_records_each_version(empty_database: str) -> None:
    assert await db_init(empty_database) == (0, ALL_APPLIED, "")
    assert await versions(empty_database) == EVERY_VERSION
    assert await db_init(empty_database) == (0, NOTHING_TO_APPLY, "")


async def test_replicas_starting_together_apply_each_version_once(empty_database: str) -> None:
    results = await asyncio.gather(*(db_init(empty_database) for _ in range(3)))
    assert sorted(results) == [(0, ALL_APPLIED, "")] + [(0, NOTHING_TO_APPLY, "")] * 2
    assert await versions(empty_database) == EVERY_VERSION


async def test_db_init_after_supabase_db_push_applies_nothing(
    empty_database: str, tmp_path: Path
) -> None:
    output = await supabase_db_push(empty_database, tmp_path)
    assert "Applying migration 0001_init.sql" in output
    assert await versions(empty_database) == EVERY_VERSION
    records = await recorded(empty_database)

    assert await db_init(empty_database) == (0, NOTHING_TO_APPLY, "")
    assert await recorded(empty_database) == records
    await add_a_finished_session(empty_database)


async def test_supabase_db_push_after_db_init_finds_nothing_to_push(
    empty_database: str, tmp_path: Path
) -> None:
    assert await db_init(empty_database) == (0, ALL_APPLIED, "")
    records, schema = await recorded(empty_database), await query(empty_database, CATALOGUE)

    output = await supabase_db_push(empty_database, tmp_path)
    assert "Remote database is up to date." in output
    assert "Applying migration" not in output
    assert await recorded(empty_database) == records
    assert await query(empty_database, CATALOGUE) == schema


async def test_db_init_and_supabase_db_push_make_the_same_schema(
    postgres_server_url: str, empty_database: str, tmp_path: Path
) -> None:
    by_cli = await new_database(postgres_server_url)
    try:
        await supabase_db_push(by_cli, tmp_path)
        assert await db_init(empty_database) == (0, ALL_APPLIED, "")
        assert await query(by_cli, CATALOGUE) == await query(empty_database, CATALOGUE)
    finally:
        await drop_database(postgres_server_url, by_cli)
