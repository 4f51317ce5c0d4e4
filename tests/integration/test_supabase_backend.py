"""The service configured as the seed configures it: SUPABASE_URL + SUPABASE_KEY only.

The app (and the CLI) reach "Supabase" over real HTTP: the PostgREST stand-in of
tests/support, served on a local port, answering from the test database.
"""

import asyncio
import logging
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest

from svc import runtime
from svc.database_accessor import PostgresDatabase, SupabaseDatabase
from svc.env import ConfigurationError, Settings
from svc.main import create_app
from svc.models.records import NewPod
from tests.conftest import SERVICE_ROLE_KEY, free_port, with_database
from tests.integration.conftest import SettingsFactory, running
from tests.integration.test_booking_lifecycle import book, started_minutes_ago
from tests.integration.test_card_holds import refunded
from tests.support.mail import Mailbox
from tests.support.postgrest import PostgrestOnPostgres, serve
from tests.support.processes import clean_environment
from tests.support.settings import WEBHOOK_SECRET
from tests.support.stripe_helpers import payment_intents_of, sdk, signed_event

UNAVAILABLE = {"detail": "The database cannot be reached right now; please try again shortly."}


@pytest.fixture
async def supabase_url(postgrest: PostgrestOnPostgres) -> AsyncIterator[str]:
    async with serve(postgrest) as url:
        yield url


@pytest.fixture
def supabase_settings(make_settings: SettingsFactory, supabase_url: str) -> Settings:
    """The test settings, with the database given only as a Supabase URL and key."""
    return make_settings(
        DATABASE_URL=None, SUPABASE_URL=supabase_url, SUPABASE_KEY=SERVICE_ROLE_KEY
    )


@pytest.fixture
async def pods(db: PostgresDatabase) -> dict[str, int]:
    pod1 = await db.insert_pod(
        NewPod(name="pod1", address="1 Demo Street, London", price=Decimal("0.25"), currency="gbp")
    )
    quiet = await db.insert_pod(
        NewPod(name="quiet", address="2 Side Road", price=Decimal("0.125"), currency="gbp")
    )
    return {"pod1": pod1.id, "quiet": quiet.id}


async def test_supabase_settings_alone_select_the_supabase_backend(
    supabase_settings: Settings, supabase_url: str
) -> None:
    assert supabase_settings.DATABASE_URL is None
    async with AsyncExitStack() as stack:
        db, description = await runtime.open_database(supabase_settings, stack)
        assert isinstance(db, SupabaseDatabase)
        assert description == f"Supabase at {supabase_url} (PostgREST, service-role key)"


async def test_a_connection_string_wins_over_supabase_settings(
    make_settings: SettingsFactory, clean_database: str, supabase_url: str
) -> None:
    settings = make_settings(SUPABASE_URL=supabase_url, SUPABASE_KEY=SERVICE_ROLE_KEY)
    async with AsyncExitStack() as stack:
        db, description = await runtime.open_database(settings, stack)
        assert isinstance(db, PostgresDatabase)
        assert description == "Postgres at DATABASE_URL"


async def test_the_api_answers_from_supabase(
    supabase_settings: Settings, postgrest: PostgrestOnPostgres, pods: dict[str, int]
) -> None:
    async with running(create_app(supabase_settings)) as client:
        ready = await client.get("/readyz")
        listed = await client.get("/api/pods")
        one = await client.get("/api/pod?podName=quiet")
        missing = await client.get("/api/pod?podId=999")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
    assert (listed.status_code, listed.json()) == (
        200,
        [
            {
                "id": pods["pod1"],
                "name": "pod1",
                "address": "1 Demo Street, London",
                "price_per_minute": "0.2500",
                "currency": "gbp",
                "in_use": False,
                "available": True,
                "out_of_service": None,
            },
            {
                "id": pods["quiet"],
                "name": "quiet",
                "address": "2 Side Road",
                "price_per_minute": "0.1250",
                "currency": "gbp",
                "in_use": False,
                "available": True,
                "out_of_service": None,
            },
        ],
    )
    assert (one.status_code, one.json()["price_per_minute"]) == (200, "0.1250")
    assert (missing.status_code, missing.json()) == (404, {"detail": "No pod with id 999."})
    # each answer came over HTTP from the project's REST API, with the service-role key: the
    # pod list once at start (which pods have a lock while SEAM_API_KEY is unset), once asked
    listing = [
        request
        for request in postgrest.requests
        if ("order", "name.asc") in request.url.params.multi_items()
    ]
    assert [(r.method, r.url.path, r.headers["apikey"]) for r in listing] == [
        ("GET", "/rest/v1/pods", SERVICE_ROLE_KEY)
    ] * 2


async def test_a_booking_runs_end_to_end_on_supabase(
    supabase_settings: Settings,
    localstripe_url: str,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pods: dict[str, int],
    postgrest: PostgrestOnPostgres,
) -> None:
    stripe_client = sdk(localstripe_url)
    async with running(create_app(supabase_settings)) as client:
        card, session_id = await book(client, stripe_client)
        # Stripe's webhook for the same SetupIntent arrives too: still one session, one e-mail
        body, headers = signed_event("setup_intent.succeeded", card.setup_intent, WEBHOOK_SECRET)
        webhook = await client.post("/webhook/stripe", content=body, headers=headers)
        assert (webhook.status_code, webhook.json()) == (200, {"status": "success"})
        [code_mail] = await mailbox.wait_for("access_code")
        assert (
            code_mail.end_session_link() == f"http://qwip.test/end-session?sessionId={session_id}"
        )

        await started_minutes_ago(sql, session_id, 630)
        preview = (await client.get(f"/api/end-session-preview?sessionId={session_id}")).json()
        assert (preview["cost_pence"], preview["cost"], preview["is_complete"]) == (
            263,
            "2.63",
            False,
        )
        ends = await asyncio.gather(
            *(
                client.post("/api/end-session", json={"sessionId": str(session_id)})
                for _ in range(3)
            )
        )
        [receipt] = await mailbox.wait_for("receipt")

    results = [end.json() for end in ends]
    assert {end.status_code for end in ends} == {200}
    assert {(r["final_cost_pence"], r["payment_status"], r["end_time"]) for r in results} == {
        (263, "succeeded", results[0]["end_time"])
    }
    [intent] = await payment_intents_of(stripe_client, card.customer_id)
    assert (intent["amount"], intent["status"]) == (263, "succeeded")
    assert receipt.subject == "Your Qwip receipt for pod1: £2.63"
    row = await sql.fetchrow(
        "select s.payment_status, s.cost_pence, p.in_use from pod_sessions s "
        "join pods p on p.id = s.pod_id where s.id = $1",
        session_id,
    )
    assert tuple(row) == ("succeeded", 263, False)
    assert await sql.fetchval("select count(*) from email_outbox where kind = 'access_code'") == 1
    called = {r.url.path for r in postgrest.requests}
    assert {
        "/rest/v1/rpc/qwip_start_session_once",
        "/rest/v1/rpc/qwip_end_session_with_hold",
        "/rest/v1/rpc/qwip_claim_charge",
        "/rest/v1/rpc/qwip_record_payment",
        "/rest/v1/rpc/qwip_claim_emails",
        "/rest/v1/email_outbox",
    } <= called


async def test_readyz_is_503_when_supabase_cannot_be_reached(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(
        DATABASE_URL=None,
        SUPABASE_URL=f"http://127.0.0.1:{free_port()}",
        SUPABASE_KEY=SERVICE_ROLE_KEY,
    )
    async with running(create_app(settings)) as client:
        response = await client.get("/readyz")
        pods = await client.get("/api/pods")
    assert (response.status_code, response.json()) == (503, UNAVAILABLE)
    assert (pods.status_code, pods.json()) == (503, UNAVAILABLE)


async def test_readyz_is_503_and_says_why_when_the_project_refuses_the_key(
    make_settings: SettingsFactory, supabase_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        DATABASE_URL=None, SUPABASE_URL=supabase_url, SUPABASE_KEY="sb_secret_revoked"
    )
    async with running(create_app(settings)) as client:
        with caplog.at_level(logging.ERROR, logger="svc.database_accessor"):
            response = await client.get("/readyz")
    assert (response.status_code, response.json()) == (503, UNAVAILABLE)
    assert (
        "database.key_refused status=401 code=None: SUPABASE_KEY must be the project's "
        "service-role key and the migration must be applied"
    ) in [record.getMessage() for record in caplog.records]


async def test_readyz_is_503_and_says_why_when_the_project_lacks_the_schema(
    make_settings: SettingsFactory, postgres_server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"qwip_empty_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(postgres_server_url)
    await admin.execute(f'create database "{name}"')
    stand_in = PostgrestOnPostgres(with_database(postgres_server_url, name), SERVICE_ROLE_KEY)
    try:
        async with serve(stand_in) as url:
            settings = make_settings(
                DATABASE_URL=None, SUPABASE_URL=url, SUPABASE_KEY=SERVICE_ROLE_KEY
            )
            async with running(create_app(settings)) as client:
                with caplog.at_level(logging.ERROR, logger="svc.database_accessor"):
                    response = await client.get("/readyz")
    finally:
        await stand_in.close()
        await admin.execute(f'drop database "{name}" with (force)')
        await admin.close()
    assert (response.status_code, response.json()) == (503, UNAVAILABLE)
    assert (
        'database.schema_missing code=42P01 message=relation "pods" does not exist: apply '
        "supabase/migrations/*.sql to the project, in order"
    ) in [record.getMessage() for record in caplog.records]


async def test_the_service_will_not_start_with_the_anon_key(
    make_settings: SettingsFactory, supabase_url: str
) -> None:
    settings = make_settings(
        DATABASE_URL=None, SUPABASE_URL=supabase_url, SUPABASE_KEY="sb_publishable_abc"
    )
    with pytest.raises(ConfigurationError, match="^SUPABASE_KEY is the project's anon"):
        async with running(create_app(settings)):
            pass


async def run_cli(supabase_url: str, *args: str, tmp_path: Path) -> tuple[int, str, str]:
    env = clean_environment(SUPABASE_URL=supabase_url, SUPABASE_KEY=SERVICE_ROLE_KEY)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "svc",
        *args,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # The stand-in serves from this event loop: wait for the CLI without blocking it.
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_the_cli_manages_pods_on_supabase(
    supabase_url: str, tmp_path: Path, sql: asyncpg.Connection
) -> None:
    add = ("pods", "add", "pod7", "--address", "7 High St", "--price-per-minute", "0.25")
    added = await run_cli(supabase_url, *add, tmp_path=tmp_path)
    assert added[0] == 0, added[2]
    assert added[1].startswith("added pod7             0.2500 gbp/min  free")
    taken = await run_cli(supabase_url, *add, tmp_path=tmp_path)
    assert taken == (1, "", "error: A pod named 'pod7' already exists.\n")
    listed = await run_cli(supabase_url, "pods", "list", tmp_path=tmp_path)
    assert listed[0] == 0 and listed[1].startswith("pod7             0.2500 gbp/min  free")
    assert await sql.fetchval("select price::text from pods where name = 'pod7'") == "0.2500"


async def test_db_init_on_supabase_says_how_to_apply_the_schema(
    supabase_url: str, tmp_path: Path
) -> None:
    code, stdout, stderr = await run_cli(supabase_url, "db", "init", tmp_path=tmp_path)
    assert (code, stdout) == (1, "")
    assert stderr == (
        "error: SUPABASE_URL and SUPABASE_KEY reach the project over its HTTP API, which cannot "
        "run SQL: apply supabase/migrations/ with `supabase db push`, or set DATABASE_URL to the "
        "project's connection string\n"
    )


async def test_a_hold_is_placed_and_captured_for_the_cost_on_supabase(
    make_settings: SettingsFactory,
    supabase_url: str,
    localstripe_url: str,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pods: dict[str, int],
    postgrest: PostgrestOnPostgres,
) -> None:
    settings = make_settings(
        DATABASE_URL=None, SUPABASE_URL=supabase_url, SUPABASE_KEY=SERVICE_ROLE_KEY, HOLD_MINUTES=60
    )
    held = 1500  # 60 minutes at £0.25
    stripe_client = sdk(localstripe_url)
    async with running(create_app(settings)) as client:
        card, session_id = await book(client, stripe_client)
        [hold] = await payment_intents_of(stripe_client, card.customer_id)
        assert (hold["capture_method"], hold["status"], hold["amount"]) == (
            "manual",
            "requires_capture",
            held,
        )
        await started_minutes_ago(sql, session_id, 630)
        ended = await client.post("/api/end-session", json={"sessionId": str(session_id)})
        [receipt] = await mailbox.wait_for("receipt")

    body = ended.json()
    assert ended.status_code == 200, ended.text
    assert (
        body["final_cost_pence"],
        body["payment_status"],
        body["hold_pence"],
        body["captured_pence"],
        body["released_pence"],
    ) == (263, "succeeded", held, 263, held - 263)
    # The hold itself was captured for the cost (one capture, under the session's key), and
    # localstripe refunds the uncaptured rest.
    [captured] = await payment_intents_of(stripe_client, card.customer_id)
    assert (captured["id"], captured["status"], captured["amount"]) == (
        hold["id"],
        "succeeded",
        held,
    )
    async with httpx.AsyncClient(base_url=localstripe_url) as http:
        log = (await http.get("/_config/qwip/requests")).json()
    assert [
        (entry["idempotency_key"], entry["status"])
        for entry in log
        if entry["path"] == f"/v1/payment_intents/{hold['id']}/capture"
    ] == [(f"qwip-hold-capture-{session_id}", 200)]
    assert await refunded(stripe_client, captured["latest_charge"]) == held - 263
    assert "Held at booking: £15.00; captured: £2.63; released: £12.37." in receipt.text
    row = await sql.fetchrow(
        "select hold_payment_intent_id, hold_pence, captured_pence, released_pence, "
        "payment_status from pod_sessions where id = $1",
        session_id,
    )
    assert tuple(row) == (hold["id"], held, 263, held - 263, "succeeded")
    # Every step of the hold went through the project's REST API.
    called = {r.url.path for r in postgrest.requests}
    assert {
        "/rest/v1/rpc/qwip_begin_hold",
        "/rest/v1/rpc/qwip_record_hold",
        "/rest/v1/rpc/qwip_start_session_once",
        "/rest/v1/rpc/qwip_end_session_with_hold",
        "/rest/v1/rpc/qwip_record_settlement",
    } <= called
