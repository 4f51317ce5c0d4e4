"""Backup codes, against Seam's own fake server (which keeps a backup pool per lock) with
Postgres, localstripe and the SMTP server: a code that fails to set, or is still not set
CODE_FALLBACK_SECONDS after the start, is replaced by a backup code e-mailed to the customer,
and the session is billed as usual; without a backup code, the session ends without charge."""

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from uuid import UUID

import asyncpg
import pytest
import stripe
from seam import AsyncSeam, SeamHttpApiError

from svc import locks
from svc.database_accessor import PostgresDatabase
from svc.env import Settings
from svc.main import create_app
from svc.models.records import NewPod
from svc.sessions import find_session
from tests.conftest import free_port
from tests.integration.conftest import SettingsFactory, running
from tests.integration.test_booking_lifecycle import CUSTOMER, book, started_minutes_ago
from tests.integration.test_locks import LOCK, SEAM_KEY, code_row, status_body, wait_for_status
from tests.support.latency_proxy import LatencyProxy
from tests.support.mail import Mailbox, Received
from tests.support.settings import OPERATOR
from tests.support.stripe_helpers import payment_intents_of

PULLS = "/access_codes/pull_backup_access_code"
CREATES = "/access_codes/create"


@pytest.fixture
def lock_settings(make_settings: SettingsFactory, fake_seam_url: str) -> Settings:
    return make_settings(SEAM_API_KEY=SEAM_KEY, SEAM_ENDPOINT=fake_seam_url)


@pytest.fixture
async def seam(fake_seam_url: str) -> AsyncIterator[AsyncSeam]:
    """The test's own look at the fake Seam, through Seam's SDK."""
    async with AsyncSeam(api_key=SEAM_KEY, endpoint=fake_seam_url) as client:
        yield client


@pytest.fixture
async def pods(db: PostgresDatabase) -> None:
    """`locked` and `twin`, two pods behind the same lock."""
    for name in ("locked", "twin"):
        await db.insert_pod(
            NewPod(
                name=name,
                address="1 Lock Lane",
                price=Decimal("0.25"),
                currency="gbp",
                seam_device_id=LOCK,
            )
        )


def backup_code_in(mail: Received) -> str:
    found = re.search(r"here is a backup code that works now: (\d+)\.", mail.text)
    assert found, mail.text
    return found.group(1)


async def backup_row(sql: asyncpg.Connection, session_id: UUID) -> asyncpg.Record:
    row = await sql.fetchrow(
        "select backup_access_code_id, backup_access_code from pod_sessions where id = $1",
        session_id,
    )
    assert row is not None
    return row


async def assert_gone(seam: AsyncSeam, access_code_id: str) -> None:
    with pytest.raises(SeamHttpApiError) as gone:
        await seam.access_codes.get(access_code_id=access_code_id)
    assert gone.value.status_code == 404


async def test_a_code_that_fails_to_set_gets_a_backup_code_emailed_and_the_session_is_billed(
    lock_settings: Settings,
    stripe_client: stripe.StripeClient,
    seam: AsyncSeam,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    app = create_app(lock_settings)
    async with running(app) as client:
        card, session_id = await book(client, stripe_client, pod="locked")
        await wait_for_status(client, session_id, "unset")
        services = app.state.services
        # Where Seam's access_code.failed_to_set_on_device leads, as the lock worker's failures do.
        session = await find_session(services.db, session_id)
        await locks.code_did_not_set(services, session, reason="Seam could not set the code")

        [mail] = await mailbox.wait_for("backup_code")
        [alert] = await mailbox.wait_for("operator_alert")
        code = backup_code_in(mail)
        assert (mail.recipients, mail.subject) == (
            [CUSTOMER],
            f"A new door code for locked: {code}",
        )
        assert f"End my session: http://qwip.test/end-session?sessionId={session_id}" in mail.text
        assert (alert.recipients, alert.subject) == (
            [OPERATOR],
            "qwipsvc: the lock of locked did not set a code; a backup code is in use",
        )
        row = await backup_row(sql, session_id)
        pulled = await seam.access_codes.get(access_code_id=row["backup_access_code_id"])
        assert (pulled.is_backup, pulled.device_id, pulled.code) == (True, LOCK, code)
        assert row["backup_access_code"] == code

        status = await client.get(f"/api/session-status?sessionId={session_id}")
        assert (status.status_code, status.json()) == (
            200,
            status_body(session_id, "locked", "unset", lock_has_code=True, backup_code_in_use=True),
        )
        page = await client.get(f"/end-session?sessionId={session_id}")
        assert page.status_code == 200
        assert f'<p class="code" id="backup-code">{code}</p>' in page.text

        # Asked again (Seam's event delivered twice, another replica): nothing more happens.
        await locks.code_did_not_set(services, session, reason="Seam could not set the code")
        assert (await backup_row(sql, session_id))["backup_access_code_id"] == pulled.access_code_id

        await started_minutes_ago(sql, session_id, 630)
        ended = await client.post("/api/end-session", json={"sessionId": str(session_id)})
        assert ended.status_code == 200
        assert (ended.json()["payment_status"], ended.json()["final_cost_pence"]) == (
            "succeeded",
            263,
        )
        await mailbox.wait_for("receipt")
        await wait_for_status(client, session_id, "removed")
    # both codes are off the lock: the backup must not open the door after the session
    await assert_gone(seam, pulled.access_code_id)
    await assert_gone(seam, (await code_row(sql, session_id))["access_code_id"])
    assert [pi["amount"] for pi in await payment_intents_of(stripe_client, card.customer_id)] == [
        263
    ]
    assert mailbox.messages("backup_code") == [mail]
    assert mailbox.messages("lock_failed") == []


async def test_a_code_not_set_in_time_gets_a_backup_code(
    lock_settings: Settings,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    async with running(create_app(lock_settings)) as client:
        _, session_id = await book(client, stripe_client, pod="locked")
        # the fake Seam leaves every code "unset": a lock that never sets it
        await wait_for_status(client, session_id, "unset")
        assert (await backup_row(sql, session_id))["backup_access_code_id"] is None
        await started_minutes_ago(sql, session_id, 121)  # CODE_FALLBACK_SECONDS is 120
        [mail] = await mailbox.wait_for("backup_code")
        status = await client.get(f"/api/session-status?sessionId={session_id}")
        preview = (await client.get(f"/api/end-session-preview?sessionId={session_id}")).json()
    assert backup_code_in(mail) == (await backup_row(sql, session_id))["backup_access_code"]
    assert (status.status_code, status.json()) == (
        200,
        status_body(session_id, "locked", "unset", lock_has_code=True, backup_code_in_use=True),
    )
    assert (preview["is_complete"], preview["payment_status"]) == (False, None)
    assert mailbox.messages("lock_failed") == []


async def test_without_a_backup_code_the_session_ends_without_charge(
    lock_settings: Settings,
    stripe_client: stripe.StripeClient,
    seam: AsyncSeam,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    async with running(create_app(lock_settings)) as client:
        card, session_id = await book(client, stripe_client, pod="locked")
        await wait_for_status(client, session_id, "unset")
        # The code was taken off the lock behind Seam's back: Seam has nothing to pull a
        # backup for, as when the lock's pool is empty.
        access_code_id = (await code_row(sql, session_id))["access_code_id"]
        await seam.client.post("/access_codes/delete", json={"access_code_id": access_code_id})
        await started_minutes_ago(sql, session_id, 121)

        [sorry] = await mailbox.wait_for("lock_failed")
        [alert] = await mailbox.wait_for("operator_alert")
        await wait_for_status(client, session_id, "removed")
        preview = (await client.get(f"/api/end-session-preview?sessionId={session_id}")).json()
    assert (sorry.recipients, sorry.subject) == (
        [CUSTOMER],
        "Your Qwip session in locked could not start",
    )
    assert "you have not been charged" in sorry.text
    assert (
        "the lock had not set the code 120 s after the start, and no backup code was to be "
        "had. The session was ended without charge" in alert.text
    )
    assert (preview["cost_pence"], preview["payment_status"], preview["is_complete"]) == (
        0,
        "not_charged",
        True,
    )
    assert await payment_intents_of(stripe_client, card.customer_id) == []
    assert mailbox.messages("backup_code") == []
    assert (await backup_row(sql, session_id))["backup_access_code_id"] is None


async def test_two_sessions_never_get_the_same_backup_code(
    make_settings: SettingsFactory,
    fake_seam_url: str,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    db: PostgresDatabase,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    # Two pods behind one lock, whose codes never set. Seam's fake answers every code of a
    # lock with the same backup code: the database hands it to one session only.
    settings = make_settings(
        SEAM_API_KEY=SEAM_KEY, SEAM_ENDPOINT=fake_seam_url, CODE_FALLBACK_SECONDS=0
    )
    async with running(create_app(settings)) as client:
        booked = await asyncio.gather(
            book(client, stripe_client, pod="locked"), book(client, stripe_client, pod="twin")
        )
        [mail] = await mailbox.wait_for("backup_code")
        [sorry] = await mailbox.wait_for("lock_failed")
        previews = [
            (await client.get(f"/api/end-session-preview?sessionId={session_id}")).json()
            for _, session_id in booked
        ]
    holders = await sql.fetch(
        "select id, backup_access_code from pod_sessions where backup_access_code_id is not null"
    )
    assert len(holders) == 1
    assert backup_code_in(mail) == holders[0]["backup_access_code"]
    states = sorted((p["is_complete"], p["payment_status"]) for p in previews)
    assert states == [(False, None), (True, "not_charged")]
    assert mailbox.messages("backup_code") == [mail]


@pytest.fixture
def seam_proxy(fake_seam_url: str) -> Iterator[LatencyProxy]:
    proxy = LatencyProxy(fake_seam_url, free_port()).start()
    yield proxy
    proxy.stop()


async def test_a_session_gets_one_backup_code_with_two_replicas_running_the_round(
    make_settings: SettingsFactory,
    seam_proxy: LatencyProxy,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    # The rounds run once at start, then only when the test runs them.
    settings = make_settings(
        SEAM_API_KEY=SEAM_KEY, SEAM_ENDPOINT=seam_proxy.url, BACKGROUND_INTERVAL_SECONDS=3600
    )
    one, two = create_app(settings), create_app(settings)
    async with running(one) as client, running(two):
        _, session_id = await book(client, stripe_client, pod="locked")
        await wait_for_status(client, session_id, "unset")
        await started_minutes_ago(sql, session_id, 121)
        await asyncio.gather(
            locks.replace_unset_codes(one.state.services),
            locks.replace_unset_codes(two.state.services),
        )
        await asyncio.gather(
            locks.replace_unset_codes(one.state.services),
            locks.replace_unset_codes(two.state.services),
        )
        await mailbox.wait_for("backup_code")
    assert [path for _, path, _ in seam_proxy.seen if path == PULLS] == [PULLS]
    # the code was created with the lock's backup pool on
    [created] = [json.loads(body) for path, body in seam_proxy.bodies if path == CREATES]
    assert created["use_backup_access_code_pool"] is True
    queued = await sql.fetchval("select count(*) from email_outbox where kind = 'backup_code'")
    assert queued == 1
    assert (await backup_row(sql, session_id))["backup_access_code_id"] is not None
