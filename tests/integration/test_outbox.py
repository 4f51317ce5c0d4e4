"""The outbox against Postgres and a real SMTP server (aiosmtpd): each message fails on
its own, and one that never can go goes to a dead letter the operator is told of once."""

import asyncio
import json
import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
import stripe

from svc.database_accessor import PostgresDatabase
from svc.email_manager import access_code_email
from svc.email_manager.messages import queued
from svc.email_manager.schemas import ReceiptEmail
from svc.main import create_app
from svc.models.records import NewPod, QueuedEmail
from svc.types import PaymentStatus
from tests.conftest import free_port
from tests.integration.conftest import SettingsFactory, running
from tests.integration.test_booking_lifecycle import RefusingMailbox
from tests.support import booking
from tests.support.mail import Mailbox, start_smtp_server
from tests.support.settings import OPERATOR

POISONED = "y@example.com\nBcc: z@evil.example"
START = "2026-11-26T10:00:00+00:00"


def access_code_for(recipient: str, code: str) -> QueuedEmail:
    email = access_code_email(
        session_id=uuid4(),
        recipient=recipient,
        access_code=code,
        pod_name="pod1",
        pod_address="1 Demo Street",
        price_per_minute=Decimal("0.25"),
        currency="gbp",
        end_session_url="http://qwip.test/end-session?sessionId=x",
    )
    return QueuedEmail(
        dedupe_key=email.dedupe_key,
        kind=email.kind,
        recipient=recipient,
        payload={**email.payload, "start_time": START},
    )


def receipt_for(recipient: str) -> QueuedEmail:
    receipt = ReceiptEmail(
        session_id=uuid4(),
        pod_name="pod2",
        start_time=datetime(2026, 11, 26, 9, tzinfo=UTC),
        end_time=datetime(2026, 11, 26, 9, 10, tzinfo=UTC),
        duration_seconds=600,
        cost_pence=250,
        currency="gbp",
        payment_status=PaymentStatus.SUCCEEDED,
    )
    return queued(receipt, dedupe_key=f"receipt:{receipt.session_id}", recipient=recipient)


async def insert_rows(sql: asyncpg.Connection, emails: list[QueuedEmail]) -> None:
    """Straight into the table, as a release without the recipient check queued them."""
    for email in emails:
        await sql.execute(
            "insert into email_outbox (dedupe_key, kind, recipient, payload) "
            "values ($1, $2, $3, $4::jsonb)",
            email.dedupe_key,
            email.kind,
            email.recipient,
            json.dumps(email.payload),
        )


async def until(sql: asyncpg.Connection, query: str, expected: Any, timeout: float = 15) -> None:
    for _ in range(int(timeout / 0.05)):
        if await sql.fetchval(query) == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{query} never gave {expected!r}: {await sql.fetchval(query)!r}")


async def test_a_poisoned_recipient_fails_alone_and_the_operator_is_told_once(
    make_settings: SettingsFactory, mailbox: Mailbox, sql: asyncpg.Connection
) -> None:
    poisoned = access_code_for(POISONED, "111111")
    other = access_code_for("bob@example.com", "222222")
    receipt = receipt_for("carol@example.com")
    await insert_rows(sql, [poisoned, other, receipt])
    async with running(create_app(make_settings())):
        # Delivered in the first round, next to the poisoned message.
        [code] = await mailbox.wait_for("access_code", timeout=5)
        [sent_receipt] = await mailbox.wait_for("receipt", timeout=5)
        [notice] = await mailbox.wait_for("operator_alert", timeout=5)
        await until(sql, "select count(*) from email_outbox where sent_at is not null", 3)
        await asyncio.sleep(1)  # rounds go on: nothing is sent again, no second notice
    assert (code.recipients, code.access_code()) == (["bob@example.com"], "222222")
    assert sent_receipt.recipients == ["carol@example.com"]
    assert [m.recipients for m in mailbox.messages()] == [
        ["bob@example.com"],
        ["carol@example.com"],
        [OPERATOR],
    ]
    assert notice.subject == "qwipsvc: an e-mail (access_code) could not be delivered"
    problem = (
        "'y@example.com\\nBcc: z@evil.example' is not an e-mail address: The part after the "
        "@-sign contains invalid characters: ':', '@', SPACE, U+000A."
    )
    assert notice.text.replace("\r\n", "\n").strip() == (
        f"The 'access_code' e-mail {poisoned.dedupe_key} to "
        f"'y@example.com\\nBcc: z@evil.example' was set aside for good: the recipient is "
        f"not an e-mail address, so no attempt could ever deliver it. The last error: "
        f"{problem}\n\nThe customer never received their door code by e-mail (the booking "
        "page showed it to them). If they cannot get in, reach them through their Stripe "
        "Customer. If the address is wrong, correct it on their Stripe Customer. The "
        "service will not send it again (email_outbox id 1, dead_at set)."
    )
    assert "111111" not in notice.text and "111111" not in notice.html
    rows = await sql.fetch(
        "select recipient, attempts, sent_at is not null, dead_at is not null, last_error "
        "from email_outbox order by id"
    )
    assert [tuple(row.values()) for row in rows] == [
        (POISONED, 1, False, True, problem),
        ("bob@example.com", 1, True, False, None),
        ("carol@example.com", 1, True, False, None),
        (OPERATOR, 1, True, False, None),
    ]


async def test_a_refused_recipient_goes_dead_after_email_max_attempts(
    make_settings: SettingsFactory, sql: asyncpg.Connection
) -> None:
    await insert_rows(sql, [receipt_for("nobody@example.com"), receipt_for("ada@example.com")])
    port = free_port()
    mailbox, controller = start_smtp_server(port, RefusingMailbox())
    try:
        settings = make_settings(
            SMTP_PORT=port, EMAIL_MAX_ATTEMPTS=3, EMAIL_RETRY_BASE_SECONDS=0.01
        )
        async with running(create_app(settings)):
            [notice] = await mailbox.wait_for("operator_alert", timeout=20)
            await asyncio.sleep(1.5)  # a dead letter is never handed out again
    finally:
        controller.stop()
    assert [m.recipients for m in mailbox.messages()] == [["ada@example.com"], [OPERATOR]]
    assert (
        "was set aside for good: it could not be sent in 3 attempts. The last error: "
        "SMTPRecipientsRefused: " in notice.text
    )
    assert "550" in notice.text
    rows = await sql.fetch(
        "select recipient, attempts, sent_at is not null, dead_at is not null "
        "from email_outbox order by id"
    )
    assert [tuple(row.values()) for row in rows] == [
        ("nobody@example.com", 3, False, True),
        ("ada@example.com", 1, True, False),
        (OPERATOR, 1, True, False),
    ]


async def test_an_unreachable_mail_server_never_makes_a_dead_letter(
    make_settings: SettingsFactory, sql: asyncpg.Connection
) -> None:
    await insert_rows(sql, [receipt_for("ada@example.com")])
    settings = make_settings(
        SMTP_PORT=free_port(), EMAIL_MAX_ATTEMPTS=2, EMAIL_RETRY_BASE_SECONDS=0.01
    )
    async with running(create_app(settings)):
        await until(sql, "select attempts >= 4 from email_outbox", True)
    assert await sql.fetchval("select count(*) from email_outbox where dead_at is not null") == 0


async def test_an_invalid_billing_email_from_stripe_starts_the_session_without_queuing_to_it(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    db: PostgresDatabase,
    sql: asyncpg.Connection,
) -> None:
    await db.insert_pod(
        NewPod(name="pod1", address="1 Demo Street", price=Decimal("0.25"), currency="gbp")
    )
    async with running(create_app(make_settings())) as client:
        card = await booking.save_card(
            client, stripe_client, pod="pod1", email=None, card_email=POISONED
        )
        booked = await booking.confirm_booking(client, card)
        [notice] = await mailbox.wait_for("operator_alert")
    session_id = booked["session_id"]
    assert (
        await sql.fetchval("select user_email from pod_sessions where id = $1", UUID(session_id))
        is None
    )
    assert await sql.fetchval("select array_agg(recipient) from email_outbox") == [OPERATOR]
    assert notice.subject == "qwipsvc: a session on pod1 started with no valid e-mail address"
    assert notice.text.replace("\r\n", "\n").strip() == (
        f"Session {session_id} on pod1 started, but Stripe (customer {card.customer_id}) gave "
        "no valid e-mail address for the customer, only 'y@example.com\\nBcc: "
        "z@evil.example'. Nothing is e-mailed to them: not the door code (the booking page "
        "showed it), nor the receipt. Reach them through their Stripe Customer if needed."
    )


BREAK_UPDATES_OF = """
create or replace function qwip_test_broken() returns trigger language plpgsql as $$
begin
    raise exception 'this session cannot be settled';
end $$;
create trigger qwip_test_broken before update on pod_sessions
    for each row when (old.id = '{session_id}') execute function qwip_test_broken();
"""


async def test_a_failing_settlement_round_does_not_stop_the_overdue_round(
    make_settings: SettingsFactory,
    db: PostgresDatabase,
    sql: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.integration.test_database_accessor import ended_session, start_request

    unsettled = await ended_session(db)
    await sql.execute("update pod_sessions set updated_at = now() - interval '1 hour'")
    pod = await db.insert_pod(
        NewPod(name="pod2", address="2 Side Road", price=Decimal("0.05"), currency="gbp")
    )
    overdue = start_request(pod.id, setup_intent="seti_2", code="654321")
    await db.start_session(overdue)
    await sql.execute(
        "update pod_sessions set start_time = now() - interval '10 minutes' where id = $1",
        overdue.session_id,
    )
    # The database refuses every change to the unsettled session: its round raises.
    await sql.execute(BREAK_UPDATES_OF.format(session_id=unsettled))
    try:
        caplog.set_level(logging.ERROR, logger="svc.background")
        settings = make_settings(MAX_SESSION_MINUTES=5, BACKGROUND_INTERVAL_SECONDS=0.1)
        async with running(create_app(settings)):
            await until(
                sql,
                f"select payment_status from pod_sessions where id = '{overdue.session_id}'",
                "not_charged",
            )
            for _ in range(100):  # and the settlement round keeps failing meanwhile
                if "background.error job=settlements" in caplog.text:
                    break
                await asyncio.sleep(0.05)
    finally:
        await sql.execute("drop trigger qwip_test_broken on pod_sessions")
    assert "background.error job=settlements" in caplog.text
    row = await sql.fetchrow(
        "select end_time - start_time as length, payment_status from pod_sessions where id = $1",
        overdue.session_id,
    )
    assert (row["length"].total_seconds(), row["payment_status"]) == (300, "not_charged")
    assert (
        await sql.fetchval("select payment_status from pod_sessions where id = $1", unsettled)
        == "pending"
    )
