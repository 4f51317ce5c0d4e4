"""The operator's queries against a real Postgres with the migrations applied, on both
backends (the `db` fixture of test_database_accessor: asyncpg, then Supabase's PostgREST
answered from the same database)."""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

import asyncpg

from svc.database_accessor import Database
from svc.models.operator import DayOfMoney
from svc.types import PaymentStatus
from tests.integration.test_database_accessor import POD, db, start_request

__all__ = ["db"]


async def started(db: Database, pod_id: int, *, setup_intent: str, code: str) -> UUID:
    outcome = await db.start_session(start_request(pod_id, setup_intent=setup_intent, code=code))
    assert outcome.session_id is not None
    return outcome.session_id


async def test_sessions_are_listed_newest_first_and_filtered(
    db: Database, sql: asyncpg.Connection
) -> None:
    first_pod = await db.insert_pod(POD)
    second_pod = await db.insert_pod(replace(POD, name="pod2"))
    owed = await started(db, first_pod.id, setup_intent="seti_owed", code="111111")
    await db.end_session(owed, max_minutes=180, lease_seconds=60)
    await db.record_payment(
        owed,
        cost_pence=263,
        status=PaymentStatus.FAILED,
        payment_intent_id="pi_1",
        error="card_declined",
        emails=[],
    )
    open_one = await started(db, second_pod.id, setup_intent="seti_open", code="222222")
    await sql.execute(
        "update pod_sessions set start_time = now() - interval '2 days', user_email = $2 "
        "where id = $1",
        owed,
        "Grace@Example.com",
    )

    everything = await db.list_session_details()
    assert [d.session.id for d in everything] == [open_one, owed]
    assert [d.session.id for d in await db.list_session_details(open_only=True)] == [open_one]
    assert [d.session.id for d in await db.list_session_details(owed_only=True)] == [owed]
    assert [d.session.id for d in await db.list_session_details(email="grace@example.COM")] == [
        owed
    ]
    since = datetime.now(UTC) - timedelta(days=1)
    assert [d.session.id for d in await db.list_session_details(since=since)] == [open_one]
    assert [d.session.id for d in await db.list_session_details(limit=1)] == [open_one]

    details = await db.get_session_details(owed)
    assert details is not None
    assert (details.session.cost_pence, details.session.payment_status) == (
        263,
        PaymentStatus.FAILED,
    )
    # The trigger noted when the payment reached its outcome; no code was set on a lock.
    assert details.settled_at is not None and details.code_set_at is None
    assert details.no_charge_reason is None
    assert await db.get_session_details(UUID(int=1)) is None


async def test_the_lock_taking_the_code_is_noted_once(db: Database) -> None:
    pod = await db.insert_pod(POD)
    session_id = await started(db, pod.id, setup_intent="seti_1", code="123456")
    assert await db.record_access_code(session_id, access_code_id="ac_1", status="setting")
    before = await db.get_session_details(session_id)
    assert before is not None and before.code_set_at is None
    assert await db.update_access_code_status(session_id, access_code_id="ac_1", status="set")
    noted = await db.get_session_details(session_id)
    assert noted is not None and noted.code_set_at is not None
    await db.update_access_code_status(session_id, access_code_id="ac_1", status="set")
    again = await db.get_session_details(session_id)
    assert again is not None and again.code_set_at == noted.code_set_at


async def test_a_sessions_emails_are_listed_with_their_fate(db: Database) -> None:
    pod = await db.insert_pod(POD)
    session_id = await started(db, pod.id, setup_intent="seti_1", code="123456")
    [claimed] = await db.claim_emails(limit=10, lease_seconds=60)
    await db.mark_emails_sent([claimed.id])
    emails = await db.list_session_emails(session_id)
    assert [(e.kind, e.recipient, e.attempts) for e in emails] == [
        ("access_code", "ada@example.com", 1)
    ]
    assert emails[0].sent_at is not None and emails[0].dead_at is None
    assert await db.list_session_emails(UUID(int=1)) == []


async def test_a_charge_is_waived_only_by_the_holder_of_an_unfixed_cost(db: Database) -> None:
    pod = await db.insert_pod(POD)
    session_id = await started(db, pod.id, setup_intent="seti_1", code="123456")
    # Open: nothing to waive yet.
    assert await db.waive_charge(session_id, reason="broken heater") is False
    await db.end_session(session_id, max_minutes=180, lease_seconds=60)
    assert await db.waive_charge(session_id, reason="broken heater") is True
    # The cost is fixed now: a second waiver (or a charge's claim) changes nothing.
    assert await db.waive_charge(session_id, reason="another") is False
    details = await db.get_session_details(session_id)
    assert details is not None
    assert (details.session.cost_pence, details.no_charge_reason) == (0, "broken heater")


async def test_money_is_summed_by_day_in_the_pods_time_zone(
    db: Database, sql: asyncpg.Connection
) -> None:
    pod = await db.insert_pod(POD)
    paid = await started(db, pod.id, setup_intent="seti_paid", code="111111")
    await db.end_session(paid, max_minutes=180, lease_seconds=60)
    await db.record_payment(
        paid,
        cost_pence=263,
        status=PaymentStatus.SUCCEEDED,
        payment_intent_id="pi_1",
        error=None,
        emails=[],
    )
    owed = await started(db, pod.id, setup_intent="seti_owed", code="222222")
    await db.end_session(owed, max_minutes=180, lease_seconds=60)
    await db.record_payment(
        owed,
        cost_pence=100,
        status=PaymentStatus.FAILED,
        payment_intent_id="pi_2",
        error="declined",
        emails=[],
    )
    # 23:30 UTC on 1 July is 00:30 on 2 July in London (summer time); 10 min 30 s long.
    for session_id, start in (
        (paid, "2026-07-01 23:30:00+00"),
        (owed, "2026-07-01 22:30:00+00"),
    ):
        await sql.execute(
            "update pod_sessions set start_time = $2::timestamptz, "
            "end_time = $2::timestamptz + interval '10 minutes 30 seconds' where id = $1",
            session_id,
            datetime.fromisoformat(start),
        )
    since = datetime(2026, 6, 1, tzinfo=UTC)
    assert await db.money_by_day(since=since, timezone="Europe/London") == [
        DayOfMoney(date(2026, 7, 1), 1, 630, 0, 100),
        DayOfMoney(date(2026, 7, 2), 1, 630, 263, 0),
    ]
    assert await db.money_by_day(since=datetime(2026, 7, 2, tzinfo=UTC), timezone="UTC") == []


async def test_forgotten_attempts_count_again_from_zero(db: Database) -> None:
    assert await db.take_booking_slot({"admin_sign_in:ip:x": 1}, window_seconds=600) == 0
    assert await db.take_booking_slot({"admin_sign_in:ip:x": 1}, window_seconds=600) > 0
    await db.forget_attempts("admin_sign_in:ip:x")
    assert await db.take_booking_slot({"admin_sign_in:ip:x": 1}, window_seconds=600) == 0
