"""The overstay reminder and the automatic end at MAX_SESSION_MINUTES, with Postgres,
localstripe and the SMTP server: one reminder e-mail however many replicas run the round, and
a receipt that says the session was ended at the limit."""

import asyncio
from datetime import timedelta
from decimal import Decimal
from uuid import UUID

import asyncpg
import pytest
import stripe

from svc import reminders
from svc.database_accessor import PostgresDatabase
from svc.main import create_app
from svc.models.records import NewPod
from svc.utils import format_local_time, format_money
from tests.integration.conftest import SettingsFactory, running
from tests.integration.test_booking_lifecycle import CUSTOMER, book, started_minutes_ago
from tests.support.mail import Mailbox

# MAX_SESSION_MINUTES is 180 and REMINDER_MINUTES 15: the reminder is due at 165 minutes.
DUE_SECONDS = 165 * 60


@pytest.fixture
async def pod(db: PostgresDatabase) -> None:
    await db.insert_pod(
        NewPod(name="pod1", address="1 Demo Street", price=Decimal("0.25"), currency="gbp")
    )


async def reminders_queued(sql: asyncpg.Connection, session_id: UUID) -> list[asyncpg.Record]:
    return await sql.fetch(
        "select recipient, payload from email_outbox where dedupe_key = $1",
        f"reminder:{session_id}",
    )


async def test_the_reminder_is_sent_once_with_two_replicas_running_the_round(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod: None,
) -> None:
    # The rounds run once at start, then only when the test runs them.
    settings = make_settings(BACKGROUND_INTERVAL_SECONDS=3600)
    one, two = create_app(settings), create_app(settings)
    async with running(one) as client, running(two):
        _, session_id = await book(client, stripe_client, pod="pod1")
        await mailbox.wait_for("access_code")
        await started_minutes_ago(sql, session_id, DUE_SECONDS - 60)
        rounds = [
            reminders.remind_sessions_near_the_limit(app.state.services) for app in (one, two)
        ]
        await asyncio.gather(*rounds)
        assert await reminders_queued(sql, session_id) == []  # a minute early: not yet

        await started_minutes_ago(sql, session_id, DUE_SECONDS + 1)
        for _ in range(3):
            await asyncio.gather(
                reminders.remind_sessions_near_the_limit(one.state.services),
                reminders.remind_sessions_near_the_limit(two.state.services),
            )
        [mail] = await mailbox.wait_for("reminder")
        preview = (await client.get(f"/api/end-session-preview?sessionId={session_id}")).json()
    [queued] = await reminders_queued(sql, session_id)
    start = await sql.fetchval("select start_time from pod_sessions where id = $1", session_id)
    ends_at = format_local_time(start + timedelta(minutes=180), settings.timezone)
    cost = queued["payload"]
    assert queued["recipient"] == CUSTOMER
    # the cost when the reminder was written: 165 minutes and a second or so at £0.25/min
    assert '"cost_pence": 4125' in cost or '"cost_pence": 4126' in cost, cost
    pence = 4125 if '"cost_pence": 4125' in cost else 4126
    assert (mail.recipients, mail.subject) == (
        [CUSTOMER],
        f"Your Qwip session in pod1 ends at {ends_at}",
    )
    assert f"Your session in pod1 has cost {format_money(pence, 'gbp')} so far." in mail.text
    assert f"if it is still open at {ends_at}, we end it for you" in mail.text
    assert f"End my session: http://qwip.test/end-session?sessionId={session_id}" in mail.text
    assert (preview["is_complete"], preview["payment_status"]) == (False, None)
    assert mailbox.messages("reminder") == [mail]


async def test_no_reminder_with_reminder_minutes_zero(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod: None,
) -> None:
    app = create_app(make_settings(BACKGROUND_INTERVAL_SECONDS=3600, REMINDER_MINUTES=0))
    async with running(app) as client:
        _, session_id = await book(client, stripe_client, pod="pod1")
        await started_minutes_ago(sql, session_id, 179 * 60)
        await reminders.remind_sessions_near_the_limit(app.state.services)
    assert await reminders_queued(sql, session_id) == []


async def test_the_automatic_end_at_the_limit_says_so_on_the_receipt(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod: None,
) -> None:
    async with running(create_app(make_settings())) as client:
        _, session_id = await book(client, stripe_client, pod="pod1")
        await started_minutes_ago(sql, session_id, 181 * 60)
        [receipt] = await mailbox.wait_for("receipt")
        preview = (await client.get(f"/api/end-session-preview?sessionId={session_id}")).json()
    assert (preview["is_complete"], preview["cost_pence"], preview["payment_status"]) == (
        True,
        4500,
        "succeeded",
    )
    assert (
        "Your session was still open at the limit of 180 minutes, so it was ended "
        "automatically then." in receipt.text
    )


async def test_a_session_ended_by_its_customer_is_not_said_to_be_ended_at_the_limit(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod: None,
) -> None:
    async with running(create_app(make_settings())) as client:
        _, session_id = await book(client, stripe_client, pod="pod1")
        await started_minutes_ago(sql, session_id, 630)
        ended = await client.post("/api/end-session", json={"sessionId": str(session_id)})
        [receipt] = await mailbox.wait_for("receipt")
    assert (ended.status_code, ended.json()["final_cost_pence"]) == (200, 263)
    assert "ended automatically" not in receipt.text


async def test_the_background_round_sends_the_reminder(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod: None,
) -> None:
    async with running(create_app(make_settings())) as client:
        _, session_id = await book(client, stripe_client, pod="pod1")
        await started_minutes_ago(sql, session_id, DUE_SECONDS + 1)
        [mail] = await mailbox.wait_for("reminder")
    assert (mail.recipients, mail.subject.startswith("Your Qwip session in pod1 ends at ")) == (
        [CUSTOMER],
        True,
    )
    assert len(await reminders_queued(sql, session_id)) == 1
