"""The data layer against a real Postgres with the shipped migration applied.

Every test taking `db` runs twice: on the asyncpg backend, and on the Supabase backend
whose PostgREST requests the stand-in answers from the same database (tests/support).
"""

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from uuid import UUID, uuid4

import asyncpg
import pytest

from svc.database_accessor import (
    Database,
    InvalidPod,
    PodNameTaken,
    PostgresDatabase,
    apply_migrations,
)
from svc.models.records import (
    ChargeClaim,
    EndedSession,
    LockHealth,
    NewPod,
    PodChanges,
    QueuedEmail,
    RecoveryAttempt,
    ServiceGauges,
    SessionUnlocks,
    StartSessionRequest,
)
from svc.types import PaymentStatus
from tests.conftest import migrated_database, supabase_over, with_database

POD = NewPod(name="pod1", address="1 Demo Street", price=Decimal("0.25"), currency="gbp")


def start_request(
    pod_id: int, *, setup_intent: str = "seti_1", code: str = "123456", event: str | None = None
) -> StartSessionRequest:
    session_id = uuid4()
    return StartSessionRequest(
        event_id=event,
        event_type="setup_intent.succeeded" if event else None,
        session_id=session_id,
        setup_intent_id=setup_intent,
        pod_id=pod_id,
        user_email="ada@example.com",
        customer_id="cus_1",
        payment_method="pm_1",
        access_code=code,
        free_minutes=0,
        started_email=QueuedEmail(
            dedupe_key=f"access_code:{session_id}",
            kind="access_code",
            recipient="ada@example.com",
            payload={"access_code": code},
        ),
        unavailable_email=QueuedEmail(
            dedupe_key=f"pod_unavailable:{setup_intent}",
            kind="pod_unavailable",
            recipient="ada@example.com",
            payload={"pod_name": "pod1"},
        ),
    )


@pytest.fixture(params=["postgres", "supabase"])
async def db(request: pytest.FixtureRequest, clean_database: str) -> AsyncIterator[Database]:
    """Each backend in turn, over the same clean test database."""
    if request.param == "postgres":
        database = await PostgresDatabase.connect(clean_database, pool_size=5)
        yield database
        await database.close()
    else:
        async with supabase_over(clean_database) as (database, postgrest):
            yield database
        # Everything the test did went through the Supabase client's HTTP requests.
        assert postgrest.requests


async def test_migrations_recorded_before_are_not_applied_again(database_url: str) -> None:
    # The fixture applied them; tests/integration/test_migrations.py covers the rest.
    assert await apply_migrations(database_url) == []


async def test_insert_and_read_pods(db: Database) -> None:
    created = await db.insert_pod(POD)
    await db.insert_pod(
        NewPod(name="alpha", address="2 Road", price=Decimal("0.1"), currency="eur")
    )
    assert created.name == "pod1"
    assert created.price == Decimal("0.2500")
    assert created.in_use is False
    assert [pod.name for pod in await db.list_pods()] == ["alpha", "pod1"]
    assert await db.get_pod_by_name("pod1") == created
    assert await db.get_pod_by_id(created.id) == created
    assert await db.get_pod_by_name("nope") is None
    assert await db.get_pod_by_id(999) is None


async def test_price_is_stored_exactly(db: Database, sql: asyncpg.Connection) -> None:
    created = await db.insert_pod(
        NewPod(name="p", address="", price=Decimal("0.1234"), currency="gbp")
    )
    assert await sql.fetchval("select price::text from pods where name = 'p'") == "0.1234"
    # to the last digit, as the database holds it: never through a float
    assert str(created.price) == "0.1234"
    assert [str(pod.price) for pod in await db.list_pods()] == ["0.1234"]
    updated = await db.update_pod("p", PodChanges(price=Decimal("0.1")))
    assert updated is not None and str(updated.price) == "0.1000"
    column_type = await sql.fetchval(
        "select data_type from information_schema.columns "
        "where table_name = 'pods' and column_name = 'price'"
    )
    assert column_type == "numeric"


async def test_duplicate_pod_name_is_refused(db: Database) -> None:
    await db.insert_pod(POD)
    with pytest.raises(PodNameTaken, match="A pod named 'pod1' already exists."):
        await db.insert_pod(POD)


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        (NewPod(name="bad name;--", address="", price=Decimal(1), currency="gbp"), "A pod name"),
        (
            NewPod(name="p", address="", price=Decimal("-0.01"), currency="gbp"),
            "cannot be negative",
        ),
        (NewPod(name="p", address="", price=Decimal(1), currency="GBP!"), "three-letter code"),
    ],
)
async def test_database_rejects_bad_pods(db: Database, pod: NewPod, message: str) -> None:
    with pytest.raises(InvalidPod, match=message):
        await db.insert_pod(pod)
    assert await db.list_pods() == []


async def test_update_pod_changes_only_what_is_given(db: Database) -> None:
    await db.insert_pod(POD)
    updated = await db.update_pod("pod1", PodChanges(price=Decimal("0.30"), seam_device_id="lock1"))
    assert updated is not None
    assert (updated.address, updated.price, updated.seam_device_id) == (
        "1 Demo Street",
        Decimal("0.3000"),
        "lock1",
    )
    cleared = await db.update_pod("pod1", PodChanges(clear_seam_device_id=True))
    assert cleared is not None and cleared.seam_device_id is None
    assert await db.update_pod("nope", PodChanges(address="x")) is None


async def test_start_session_claims_the_pod_and_queues_the_code(
    db: Database, sql: asyncpg.Connection
) -> None:
    pod = await db.insert_pod(POD)
    request = start_request(pod.id)
    outcome = await db.start_session(replace(request, free_minutes=5))
    assert (outcome.outcome, outcome.session_id) == ("started", request.session_id)

    session = await db.get_session_by_id(request.session_id)
    assert session is not None
    assert (session.pod_name, session.access_code, str(session.price_per_minute)) == (
        "pod1",
        "123456",
        "0.2500",
    )
    assert session.free_minutes == 5
    assert session.start_time.tzinfo is not None and session.now >= session.start_time
    assert session.end_time is None and session.payment_status is None
    assert (await db.get_pod_by_id(pod.id)).in_use is True  # type: ignore[union-attr]
    by_setup_intent = await db.get_session_by_setup_intent("seti_1")
    assert by_setup_intent is not None and by_setup_intent.id == request.session_id
    queued = await sql.fetch("select dedupe_key, payload from email_outbox")
    assert [row["dedupe_key"] for row in queued] == [f"access_code:{request.session_id}"]
    payload = json.loads(queued[0]["payload"])
    assert payload["access_code"] == "123456"
    # the database's start time is added to the message
    assert datetime.fromisoformat(payload["start_time"]) == session.start_time


async def test_same_setup_intent_returns_the_existing_session(db: Database) -> None:
    pod = await db.insert_pod(POD)
    first = await db.start_session(start_request(pod.id))
    again = await db.start_session(start_request(pod.id))
    assert again.outcome == "existing"
    assert again.session_id == first.session_id


async def test_event_seen_before_is_a_duplicate(db: Database) -> None:
    pod = await db.insert_pod(POD)
    assert (await db.start_session(start_request(pod.id, event="evt_1"))).outcome == "started"
    assert (await db.start_session(start_request(pod.id, event="evt_1"))).outcome == "duplicate"
    assert await db.is_event_processed("evt_1")
    assert not await db.is_event_processed("evt_2")


async def test_pod_in_use_queues_one_unavailable_email(
    db: Database, sql: asyncpg.Connection
) -> None:
    pod = await db.insert_pod(POD)
    await db.start_session(start_request(pod.id, setup_intent="seti_a"))
    other = start_request(pod.id, setup_intent="seti_b", code="654321")
    assert (await db.start_session(other)).outcome == "pod_unavailable"
    # the refusal is final (0005): the second attempt is told so, and queues nothing
    assert (await db.start_session(other)).outcome == "refused_before"
    assert await db.get_session_by_id(other.session_id) is None
    kinds = await sql.fetch("select kind from email_outbox order by id")
    assert [row["kind"] for row in kinds] == ["access_code", "pod_unavailable"]


async def test_a_setup_intent_refused_for_a_busy_pod_never_starts_once_it_is_free(
    db: Database, sql: asyncpg.Connection
) -> None:
    pod = await db.insert_pod(POD)
    holder = start_request(pod.id, setup_intent="seti_holder", code="111111")
    await db.start_session(holder)
    late = start_request(pod.id, setup_intent="seti_late", code="222222")
    assert (await db.start_session(late)).outcome == "pod_unavailable"
    await db.end_session(holder.session_id, max_minutes=180, lease_seconds=60)
    assert (await db.get_pod_by_id(pod.id)).in_use is False  # type: ignore[union-attr]

    # Stripe's retry of the event, then the page's call: the pod is free, nothing starts
    by_event = await db.start_session(replace(late, event_id="evt_late", event_type="x"))
    assert (by_event.outcome, by_event.session_id) == ("refused_before", None)
    assert await db.is_event_processed("evt_late")
    assert (await db.start_session(late)).outcome == "refused_before"
    assert await db.get_session_by_setup_intent("seti_late") is None
    assert (await db.get_pod_by_id(pod.id)).in_use is False  # type: ignore[union-attr]
    decided = await sql.fetch(
        "select setup_intent_id, outcome, session_id from setup_intent_outcomes order by 1"
    )
    assert [tuple(row) for row in decided] == [
        ("seti_holder", "started", holder.session_id),
        ("seti_late", "pod_unavailable", None),
    ]
    kinds = await sql.fetch("select kind, recipient from email_outbox order by id")
    assert [tuple(row) for row in kinds] == [
        ("access_code", "ada@example.com"),
        ("pod_unavailable", "ada@example.com"),
    ]
    # another SetupIntent may take the free pod
    other = start_request(pod.id, setup_intent="seti_other", code="333333")
    assert (await db.start_session(other)).outcome == "started"


async def test_the_old_start_function_keeps_the_final_refusal(
    db: Database, sql: asyncpg.Connection
) -> None:
    # A replica of the previous release, during a rolling deploy, calls the old function.
    pod = await db.insert_pod(POD)
    holder = start_request(pod.id, setup_intent="seti_holder", code="111111")
    await db.start_session(holder)
    assert (await db.start_session(start_request(pod.id, setup_intent="seti_late"))).outcome == (
        "pod_unavailable"
    )
    await db.end_session(holder.session_id, max_minutes=180, lease_seconds=60)
    answer = await sql.fetchval(
        "select qwip_start_session(null, null, $1, 'seti_late', $2, 'ada@example.com', "
        "'cus_1', 'pm_1', '222222', 0, null, null)::text",
        uuid4(),
        pod.id,
    )
    assert json.loads(answer) == {"outcome": "pod_unavailable"}
    assert await db.get_session_by_setup_intent("seti_late") is None
    # and what it starts is recorded as decided too
    fresh = await sql.fetchval(
        "select qwip_start_session(null, null, $1, 'seti_new', $2, null, "
        "'cus_1', 'pm_1', '333333', 0, null, null) ->> 'outcome'",
        uuid4(),
        pod.id,
    )
    assert fresh == "started"
    assert (
        await sql.fetchval(
            "select outcome from setup_intent_outcomes where setup_intent_id = 'seti_new'"
        )
        == "started"
    )


async def test_a_recent_code_on_the_same_pod_is_refused(db: Database) -> None:
    pod = await db.insert_pod(POD)
    first = start_request(pod.id, setup_intent="seti_a", code="111111")
    await db.start_session(first)
    await db.end_session(first.session_id, max_minutes=180, lease_seconds=60)
    clash = await db.start_session(start_request(pod.id, setup_intent="seti_b", code="111111"))
    assert clash.outcome == "code_clash"
    fresh = await db.start_session(start_request(pod.id, setup_intent="seti_b", code="222222"))
    assert fresh.outcome == "started"


async def test_concurrent_starts_on_one_pod_open_exactly_one_session(
    db: Database, sql: asyncpg.Connection
) -> None:
    pod = await db.insert_pod(POD)
    requests = [start_request(pod.id, setup_intent=f"seti_{i}", code=f"{i:06d}") for i in range(30)]
    outcomes = await asyncio.gather(*(db.start_session(r) for r in requests))
    assert sorted(o.outcome for o in outcomes).count("started") == 1
    assert sorted(o.outcome for o in outcomes).count("pod_unavailable") == 29
    assert await sql.fetchval("select count(*) from pod_sessions where end_time is null") == 1
    # every loser's refusal is final
    decided = await sql.fetch("select outcome, count(*) from setup_intent_outcomes group by 1")
    assert sorted(tuple(row) for row in decided) == [("pod_unavailable", 29), ("started", 1)]


async def test_concurrent_attempts_of_one_refused_setup_intent_agree(
    db: Database, sql: asyncpg.Connection
) -> None:
    pod = await db.insert_pod(POD)
    await db.start_session(start_request(pod.id, setup_intent="seti_holder", code="111111"))
    late = start_request(pod.id, setup_intent="seti_late", code="222222")
    outcomes = await asyncio.gather(*(db.start_session(late) for _ in range(10)))
    assert sorted(o.outcome for o in outcomes) == ["pod_unavailable"] + ["refused_before"] * 9
    assert (
        await sql.fetchval("select count(*) from email_outbox where kind = 'pod_unavailable'") == 1
    )


async def test_concurrent_starts_of_one_setup_intent_agree(db: Database) -> None:
    pod = await db.insert_pod(POD)
    requests = [start_request(pod.id, setup_intent="seti_same") for _ in range(10)]
    outcomes = await asyncio.gather(*(db.start_session(r) for r in requests))
    assert sorted(o.outcome for o in outcomes) == ["existing"] * 9 + ["started"]
    assert len({o.session_id for o in outcomes}) == 1


async def test_database_refuses_a_second_open_session_on_a_pod(
    db: Database, sql: asyncpg.Connection
) -> None:
    pod = await db.insert_pod(POD)
    await db.start_session(start_request(pod.id))
    with pytest.raises(asyncpg.UniqueViolationError, match="pod_sessions_one_open_per_pod"):
        await sql.execute(
            "insert into pod_sessions (id, pod_id, price_per_minute, currency, "
            "stripe_customer_id, setup_intent_id, access_code) "
            "values ($1, $2, 0.25, 'gbp', 'cus_x', 'seti_other', '999999')",
            uuid4(),
            pod.id,
        )
    with pytest.raises(asyncpg.UniqueViolationError, match="setup_intent_id"):
        await sql.execute(
            "insert into pod_sessions (id, pod_id, end_time, price_per_minute, currency, "
            "stripe_customer_id, setup_intent_id, access_code) "
            "values ($1, $2, now(), 0.25, 'gbp', 'cus_x', 'seti_1', '999999')",
            uuid4(),
            pod.id,
        )


async def test_end_fixes_the_end_once_frees_the_pod_and_returns_the_session(
    db: Database,
) -> None:
    pod = await db.insert_pod(POD)
    request = start_request(pod.id)
    await db.start_session(request)
    ended = await db.end_session(request.session_id, max_minutes=180, lease_seconds=60)
    assert ended is not None
    first = ended.session
    assert first.end_time is not None
    assert first.payment_status is PaymentStatus.PENDING
    # what it returns is what a read finds afterwards (but for the clock)
    read = await db.get_session_by_id(request.session_id)
    assert read is not None and first == replace(read, now=first.now)
    assert (await db.get_pod_by_id(pod.id)).in_use is False  # type: ignore[union-attr]
    await asyncio.sleep(0.01)
    again = await db.end_session(request.session_id, max_minutes=180, lease_seconds=60)
    assert again is not None and again.session.end_time == first.end_time
    assert await db.end_session(uuid4(), max_minutes=180, lease_seconds=60) is None


async def test_the_end_hands_the_charge_to_one_caller_at_a_time(db: Database) -> None:
    pod = await db.insert_pod(POD)
    request = start_request(pod.id)
    await db.start_session(request)
    ends = await asyncio.gather(
        *(db.end_session(request.session_id, max_minutes=180, lease_seconds=60) for _ in range(10))
    )
    assert sorted(end.charge_claimed for end in ends if end) == [False] * 9 + [True]
    assert len({end.session.end_time for end in ends if end}) == 1
    # the lease is the same one claim_charge hands out
    assert await db.claim_charge(request.session_id, cost_pence=263, lease_seconds=60) == (
        ChargeClaim(cost_pence=263, claimed=False)
    )
    # let go (Stripe unreachable): the next end takes it again, and a lapsed lease too
    await db.release_charge(request.session_id)
    assert await ended_and_claimed(db, request.session_id, lease_seconds=0)
    assert await ended_and_claimed(db, request.session_id, lease_seconds=60)
    assert not await ended_and_claimed(db, request.session_id, lease_seconds=60)
    # settled: nothing left to charge
    await paid(db, request.session_id, PaymentStatus.SUCCEEDED)
    await db.release_charge(request.session_id)
    assert not await ended_and_claimed(db, request.session_id, lease_seconds=60)


async def paid(
    db: Database, session_id: UUID, status: PaymentStatus, *, cost_pence: int = 263
) -> str:
    """Stripe's answer to the session's charge recorded, with no e-mail to queue."""
    error = None if status is PaymentStatus.SUCCEEDED else "declined"
    return await db.record_payment(
        session_id,
        cost_pence=cost_pence,
        status=status,
        payment_intent_id="pi_1",
        error=error,
        emails=[],
    )


async def ended_and_claimed(db: Database, session_id: UUID, *, lease_seconds: int) -> bool:
    ended = await db.end_session(session_id, max_minutes=180, lease_seconds=lease_seconds)
    assert isinstance(ended, EndedSession)
    return ended.charge_claimed


async def test_close_caps_the_end_at_the_longest_session(
    db: Database, sql: asyncpg.Connection
) -> None:
    pod = await db.insert_pod(POD)
    request = start_request(pod.id)
    await db.start_session(request)
    await sql.execute(
        "update pod_sessions set start_time = now() - interval '5 hours' where id = $1",
        request.session_id,
    )
    assert await db.list_overdue_sessions(max_minutes=180) == [request.session_id]
    await db.end_session(request.session_id, max_minutes=180, lease_seconds=60)
    session = await db.get_session_by_id(request.session_id)
    assert session is not None and session.end_time is not None
    assert (session.end_time - session.start_time).total_seconds() == 180 * 60
    assert await db.list_overdue_sessions(max_minutes=180) == []


async def ended_session(db: Database, cost: int = 263) -> UUID:
    """Ended, its cost fixed, and nobody charging it (its ender let go of the lease)."""
    pod = await db.insert_pod(POD)
    request = start_request(pod.id)
    await db.start_session(request)
    await db.end_session(request.session_id, max_minutes=180, lease_seconds=60)
    # another caller fixes the cost while the ender holds the lease; then the ender lets go
    assert await db.claim_charge(request.session_id, cost_pence=cost, lease_seconds=60) == (
        ChargeClaim(cost_pence=cost, claimed=False)
    )
    await db.release_charge(request.session_id)
    return request.session_id


LOCKED_POD = NewPod(
    name="locked", address="", price=Decimal("0.25"), currency="gbp", seam_device_id="lock_1"
)


async def test_a_code_to_put_on_a_lock_is_leased_to_one_worker_at_a_time(
    db: Database,
) -> None:
    plain = await db.insert_pod(POD)
    await db.start_session(start_request(plain.id, setup_intent="seti_plain"))
    locked = await db.insert_pod(LOCKED_POD)
    request = start_request(locked.id)
    await db.start_session(request)
    session_id = request.session_id
    # only the session on a pod with a lock has lock work
    assert await db.list_access_code_work(limit=10) == [session_id]

    claims = await asyncio.gather(
        *(db.claim_access_code_work(session_id, lease_seconds=60) for _ in range(10))
    )
    assert sorted(claims, key=lambda c: c or 0) == [None] * 9 + [1]
    assert await db.list_access_code_work(limit=10) == []
    # after a failed attempt the lease becomes the retry delay
    await db.retry_access_code_work(session_id, retry_in_seconds=60)
    assert await db.claim_access_code_work(session_id, lease_seconds=60) is None
    await db.retry_access_code_work(session_id, retry_in_seconds=0)
    assert await db.list_access_code_work(limit=10) == [session_id]
    assert await db.claim_access_code_work(session_id, lease_seconds=60) == 2

    assert await db.record_access_code(session_id, access_code_id="ac_1", status="setting")
    assert not await db.record_access_code(session_id, access_code_id="ac_2", status="setting")
    session = await db.get_session_by_id(session_id)
    assert session is not None
    assert (session.access_code_id, session.access_code_status) == ("ac_1", "setting")
    # recorded: the lease is gone and nothing is left to do while the session is open
    assert await db.list_access_code_work(limit=10) == []
    assert await db.claim_access_code_work(session_id, lease_seconds=60) == 1


async def test_an_ended_session_lists_its_code_until_it_is_removed(db: Database) -> None:
    locked = await db.insert_pod(LOCKED_POD)
    request = start_request(locked.id)
    await db.start_session(request)
    session_id = request.session_id
    await db.record_access_code(session_id, access_code_id="ac_1", status="unset")
    assert await db.update_access_code_status(session_id, access_code_id="ac_1", status="set")
    assert not await db.update_access_code_status(session_id, access_code_id="ac_9", status="x")
    await db.end_session(session_id, max_minutes=180, lease_seconds=60)
    assert await db.list_access_code_work(limit=10) == [session_id]

    assert await db.update_access_code_status(session_id, access_code_id="ac_1", status="removed")
    assert await db.list_access_code_work(limit=10) == []
    # a late status read from Seam does not bring a removed code back
    assert not await db.update_access_code_status(session_id, access_code_id="ac_1", status="set")
    session = await db.get_session_by_id(session_id)
    assert session is not None and session.access_code_status == "removed"


async def test_giving_up_on_a_code_happens_once_and_is_listed_until_settled(
    db: Database,
) -> None:
    locked = await db.insert_pod(LOCKED_POD)
    request = start_request(locked.id)
    await db.start_session(request)
    session_id = request.session_id
    await db.claim_access_code_work(session_id, lease_seconds=0)

    assert [await db.fail_access_code(session_id) for _ in range(3)] == [True, False, False]
    # a code that a slow attempt made after all is not taken for this session
    assert not await db.record_access_code(session_id, access_code_id="ac_1", status="unset")
    # a replica stopped half-way through ending it: the next one finishes the job
    assert await db.list_access_code_work(limit=10) == [session_id]
    await db.end_session(session_id, max_minutes=180, lease_seconds=60)
    assert await db.list_access_code_work(limit=10) == [session_id]
    await db.record_payment(
        session_id,
        cost_pence=0,
        status=PaymentStatus.NOT_CHARGED,
        payment_intent_id=None,
        error=None,
        emails=[],
    )
    assert await db.list_access_code_work(limit=10) == []
    session = await db.get_session_by_id(session_id)
    assert session is not None
    assert (session.access_code_id, session.access_code_status) == (None, "failed")


async def test_a_code_with_a_session_on_it_is_not_given_up(db: Database) -> None:
    locked = await db.insert_pod(LOCKED_POD)
    request = start_request(locked.id)
    await db.start_session(request)
    await db.record_access_code(request.session_id, access_code_id="ac_1", status="unset")
    assert not await db.fail_access_code(request.session_id)


async def test_first_cost_recorded_is_kept(db: Database) -> None:
    session_id = await ended_session(db, cost=263)
    assert await db.claim_charge(session_id, cost_pence=999, lease_seconds=60) == ChargeClaim(
        cost_pence=263, claimed=True
    )
    session = await db.get_session_by_id(session_id)
    assert session is not None and session.cost_pence == 263


async def test_one_charge_lease_at_a_time(db: Database) -> None:
    session_id = await ended_session(db)
    claims = await asyncio.gather(
        *(db.claim_charge(session_id, cost_pence=999, lease_seconds=60) for _ in range(20))
    )
    # the cost fixed first is every caller's; one of them holds the lease
    assert sorted(claims, key=lambda c: c is not None and c.claimed) == (
        [ChargeClaim(cost_pence=263, claimed=False)] * 19
        + [ChargeClaim(cost_pence=263, claimed=True)]
    )
    await db.release_charge(session_id)
    assert await db.claim_charge(session_id, cost_pence=999, lease_seconds=60) == ChargeClaim(
        cost_pence=263, claimed=True
    )


async def test_the_first_claim_fixes_the_cost(db: Database) -> None:
    pod = await db.insert_pod(POD)
    request = start_request(pod.id)
    await db.start_session(request)
    # not ended: nothing to charge, nothing fixed
    assert await db.claim_charge(request.session_id, cost_pence=263, lease_seconds=60) is None
    # ended, by a caller whose lease lapses at once
    await db.end_session(request.session_id, max_minutes=180, lease_seconds=0)
    claims = await asyncio.gather(
        *(db.claim_charge(request.session_id, cost_pence=c, lease_seconds=60) for c in (263, 264))
    )
    assert {claim.cost_pence for claim in claims if claim} in ({263}, {264})
    assert sorted(claim.claimed for claim in claims if claim) == [False, True]
    session = await db.get_session_by_id(request.session_id)
    assert session is not None and session.cost_pence is not None
    assert {claim.cost_pence for claim in claims if claim} == {session.cost_pence}
    # an expired lease can be taken again; the cost stays the first one
    await db.release_charge(request.session_id)
    again = await db.claim_charge(request.session_id, cost_pence=1, lease_seconds=0)
    assert again == ChargeClaim(cost_pence=session.cost_pence, claimed=True)
    assert await db.claim_charge(request.session_id, cost_pence=1, lease_seconds=60) == (
        ChargeClaim(cost_pence=session.cost_pence, claimed=True)
    )
    # settled: no charge to claim any more
    await paid(db, request.session_id, PaymentStatus.SUCCEEDED, cost_pence=1)
    assert await db.claim_charge(request.session_id, cost_pence=1, lease_seconds=60) is None


async def test_record_payment_moves_pending_once_and_queues_emails(
    db: Database, sql: asyncpg.Connection
) -> None:
    session_id = await ended_session(db)
    receipt = QueuedEmail(
        dedupe_key=f"receipt:{session_id}", kind="receipt", recipient="a@b.c", payload={}
    )
    outcome = await db.record_payment(
        session_id,
        cost_pence=263,
        status=PaymentStatus.SUCCEEDED,
        payment_intent_id="pi_1",
        error=None,
        emails=[receipt],
    )
    assert outcome == "recorded"
    again = await db.record_payment(
        session_id,
        cost_pence=263,
        status=PaymentStatus.FAILED,
        payment_intent_id="pi_2",
        error="declined",
        emails=[receipt],
    )
    assert again == "unchanged"
    session = await db.get_session_by_id(session_id)
    assert session is not None
    assert (session.payment_status, session.payment_intent_id) == (PaymentStatus.SUCCEEDED, "pi_1")
    assert await sql.fetchval("select count(*) from email_outbox where kind = 'receipt'") == 1


async def test_record_payment_fixes_the_cost_unless_fixed_before(db: Database) -> None:
    pod = await db.insert_pod(POD)
    request = start_request(pod.id)
    await db.start_session(request)
    await db.end_session(request.session_id, max_minutes=180, lease_seconds=60)
    assert await paid(db, request.session_id, PaymentStatus.FAILED, cost_pence=264) == "recorded"
    later = await paid(db, request.session_id, PaymentStatus.SUCCEEDED, cost_pence=999)
    assert later == "recorded"
    session = await db.get_session_by_id(request.session_id)
    assert session is not None
    assert (session.cost_pence, session.payment_status) == (264, PaymentStatus.SUCCEEDED)


async def test_a_failed_payment_can_later_succeed_but_not_the_reverse(db: Database) -> None:
    session_id = await ended_session(db)
    for status, expected in [
        (PaymentStatus.FAILED, "recorded"),
        (PaymentStatus.SUCCEEDED, "recorded"),
        (PaymentStatus.FAILED, "unchanged"),
    ]:
        assert await paid(db, session_id, status) == expected


async def test_record_payment_with_an_event_id_runs_once(db: Database) -> None:
    session_id = await ended_session(db)
    kwargs = {"cost_pence": 263, "payment_intent_id": "pi_1", "error": None, "emails": []}
    first = await db.record_payment(
        session_id, status=PaymentStatus.SUCCEEDED, event_id="evt_9", event_type="x", **kwargs
    )
    second = await db.record_payment(
        session_id, status=PaymentStatus.SUCCEEDED, event_id="evt_9", event_type="x", **kwargs
    )
    assert (first, second) == ("recorded", "duplicate")


async def test_service_gauges_count_open_sessions_pence_owed_and_waiting_emails(
    db: Database, sql: asyncpg.Connection
) -> None:
    assert await db.get_service_gauges() == ServiceGauges(0, 0, 0, 0)
    declined = await ended_session(db)  # pod1, ended
    await paid(db, declined, PaymentStatus.FAILED, cost_pence=263)
    other = await db.insert_pod(replace(POD, name="pod2"))
    above_hold = start_request(other.id, setup_intent="seti_2")
    await db.start_session(above_hold)
    await db.end_session(above_hold.session_id, max_minutes=180, lease_seconds=60)
    # A hold of 1500 captured whole, the 500 above it declined: 500 owed.
    await sql.execute(
        "update pod_sessions set cost_pence = 2000, captured_pence = 1500,"
        " payment_status = 'failed' where id = $1",
        above_hold.session_id,
    )
    third = await db.insert_pod(replace(POD, name="pod3"))
    await db.start_session(start_request(third.id, setup_intent="seti_3"))
    # Queued: the three access codes; one of them set aside for good.
    [first, *_] = await db.claim_emails(limit=1, lease_seconds=60)
    assert await db.dead_letter_email(first.id, error="refused", notice=None)

    assert await db.get_service_gauges() == ServiceGauges(
        open_sessions=1, owed_pence=263 + 500, emails_waiting=2, emails_dead=1
    )


async def test_outbox_hands_each_email_to_one_sender(db: Database) -> None:
    await db.queue_emails(
        [QueuedEmail(dedupe_key=f"k{i}", kind="x", recipient="a@b.c", payload={}) for i in range(5)]
    )
    await db.queue_emails([QueuedEmail(dedupe_key="k0", kind="x", recipient="a@b.c", payload={})])
    batches = await asyncio.gather(*(db.claim_emails(limit=5, lease_seconds=60) for _ in range(4)))
    claimed = [email.dedupe_key for batch in batches for email in batch]
    assert sorted(claimed) == ["k0", "k1", "k2", "k3", "k4"]
    assert await db.claim_emails(limit=5, lease_seconds=60) == []


async def test_failed_email_comes_back_after_its_delay(db: Database) -> None:
    await db.queue_emails(
        [QueuedEmail(dedupe_key=k, kind="x", recipient="a@b.c", payload={}) for k in "ab"]
    )
    [email, other] = await db.claim_emails(limit=5, lease_seconds=60)
    await db.mark_email_failed(email.id, retry_in_seconds=0, error="smtp down")
    await db.mark_email_failed(other.id, retry_in_seconds=0, error="smtp down")
    again = await db.claim_emails(limit=5, lease_seconds=60)
    assert {(e.id, e.attempts) for e in again} == {(email.id, 2), (other.id, 2)}
    await db.mark_emails_sent([e.id for e in again])
    assert await db.claim_emails(limit=5, lease_seconds=0) == []


async def test_a_dead_letter_is_never_claimed_again_and_its_notice_is_queued_once(
    db: Database, sql: asyncpg.Connection
) -> None:
    await db.queue_emails(
        [QueuedEmail(dedupe_key=k, kind="x", recipient="a@b.c", payload={}) for k in "ab"]
    )
    [dead, alive] = await db.claim_emails(limit=5, lease_seconds=60)
    notice = QueuedEmail(
        dedupe_key=f"dead_letter:{dead.id}",
        kind="operator_alert",
        recipient="ops@example.com",
        payload={"subject": "s", "text": "t"},
    )
    assert await db.dead_letter_email(dead.id, error="550 no such user", notice=notice) is True
    assert await db.dead_letter_email(dead.id, error="again", notice=notice) is False
    await db.mark_email_failed(alive.id, retry_in_seconds=0, error="smtp down")
    await sql.execute("update email_outbox set next_attempt_at = now() - interval '1 hour'")
    claimed = await db.claim_emails(limit=5, lease_seconds=60)
    assert sorted(email.dedupe_key for email in claimed) == ["b", f"dead_letter:{dead.id}"]
    row = await sql.fetchrow(
        "select attempts, dead_at is not null as dead, locked_until, last_error "
        "from email_outbox where id = $1",
        dead.id,
    )
    assert tuple(row.values()) == (1, True, None, "550 no such user")
    # A notice that dies itself queues no notice of its own.
    [notice_row] = [email for email in claimed if email.kind == "operator_alert"]
    assert await db.dead_letter_email(notice_row.id, error="550", notice=notice) is True
    assert await sql.fetchval("select count(*) from email_outbox") == 3


async def test_event_recorded_once(db: Database) -> None:
    results = await asyncio.gather(*(db.record_event("evt_x", "a.b") for _ in range(10)))
    assert results.count(True) == 1


async def test_unsettled_sessions_are_listed_once_idle(
    db: Database, sql: asyncpg.Connection
) -> None:
    session_id = await ended_session(db)
    assert await db.list_unsettled_sessions(idle_seconds=30) == []
    await sql.execute(
        "update pod_sessions set updated_at = now() - interval '1 minute' where id = $1",
        session_id,
    )
    assert await db.list_unsettled_sessions(idle_seconds=30) == [session_id]


async def test_anon_role_reads_nothing(database_url: str, db: Database) -> None:
    await db.insert_pod(POD)
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "do $$ begin if not exists (select 1 from pg_roles where rolname = 'anon') then "
            "create role anon nologin; end if; end $$"
        )
        await connection.execute("grant usage on schema public to anon")
        await connection.execute("grant select on all tables in schema public to anon")
        async with connection.transaction():
            await connection.execute("set local role anon")
            for table in ("pods", "pod_sessions", "stripe_events", "email_outbox"):
                assert await connection.fetchval(f"select count(*) from {table}") == 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.fetchval("select qwip_claim_emails(1, 1)")
        assert await connection.fetchval("select count(*) from pods") == 1
    finally:
        await connection.close()


SUPABASE_ROLES = """
do $$
begin
    create role anon nologin;
exception when duplicate_object then null;
end $$;
do $$
begin
    create role authenticated nologin;
exception when duplicate_object then null;
end $$;
do $$
begin
    create role service_role nologin bypassrls;
exception when duplicate_object then null;
end $$;
"""

# What a Supabase project grants on everything created in public, before our migration runs.
SUPABASE_DEFAULT_GRANTS = """
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public
    grant all on functions to anon, authenticated, service_role;
"""


@pytest.fixture
async def supabase_like_database(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh database with Supabase's roles and default grants, then the migration."""
    name = f"qwip_supabase_{uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(SUPABASE_ROLES)
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()
    url = with_database(postgres_server_url, name)
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(SUPABASE_DEFAULT_GRANTS)
    finally:
        await connection.close()
    await apply_migrations(url)
    yield url
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


async def test_only_the_service_role_may_call_the_functions(supabase_like_database: str) -> None:
    connection = await asyncpg.connect(supabase_like_database)
    try:
        rows = await connection.fetch("""select p.oid::regprocedure::text as function,
                      has_function_privilege('anon', p.oid, 'execute') as anon,
                      has_function_privilege('authenticated', p.oid, 'execute') as authenticated,
                      has_function_privilege('service_role', p.oid, 'execute') as service_role
               from pg_proc p
               where p.pronamespace = 'public'::regnamespace and p.proname like 'qwip\\_%'
               order by 1""")
    finally:
        await connection.close()
    assert [row["function"] for row in rows] == [
        "qwip_begin_hold(text,uuid,bigint,integer,text)",
        "qwip_begin_recovery(uuid,integer)",
        "qwip_claim_abandoned_holds(integer)",
        "qwip_claim_access_code_work(uuid,integer)",
        "qwip_claim_backup_code_work(uuid,integer)",
        "qwip_claim_charge(uuid,integer,integer)",
        "qwip_claim_emails(integer,integer)",
        "qwip_dead_letter_email(bigint,text,jsonb)",
        "qwip_end_session(uuid,integer,integer)",
        "qwip_end_session_with_hold(uuid,integer,integer)",
        "qwip_fail_access_code(uuid)",
        "qwip_fail_access_code_without_backup(uuid)",
        "qwip_find_unpaid_session(text,text)",
        "qwip_forget_attempts(text)",
        "qwip_get_backup_code(uuid)",
        "qwip_get_session(uuid,text)",
        "qwip_get_session_unlocks(uuid)",
        "qwip_get_session_with_hold(uuid,text)",
        "qwip_list_access_code_work(integer)",
        "qwip_list_backup_code_work(integer,integer)",
        "qwip_list_overdue_sessions(integer)",
        "qwip_list_reminders_due(integer,integer)",
        "qwip_list_session_emails(uuid)",
        "qwip_list_session_refunds(uuid)",
        "qwip_list_sessions(boolean,boolean,boolean,boolean,timestamp with time zone,text,uuid,"
        "integer)",
        "qwip_list_unsettled_sessions(integer)",
        "qwip_money_by_day(timestamp with time zone,text)",
        "qwip_note_session_times()",
        "qwip_postpone_email(bigint,integer,text)",
        "qwip_queue_emails(jsonb)",
        "qwip_record_access_code(uuid,text,text)",
        "qwip_record_backup_code(uuid,text,text,jsonb)",
        "qwip_record_card_fingerprint(uuid,text)",
        "qwip_record_dispute(uuid,text,text,text,jsonb)",
        "qwip_record_event(text,text,jsonb)",
        "qwip_record_hold(text,text,text,text)",
        "qwip_record_lock_health(text,text,text,timestamp with time zone,boolean,numeric,boolean,"
        "boolean,jsonb)",
        "qwip_record_payment(uuid,integer,text,text,text,jsonb,text,text)",
        "qwip_record_recovery(uuid,integer,text)",
        "qwip_record_refund(bigint,text,text,jsonb)",
        "qwip_record_reminder(uuid,jsonb)",
        "qwip_record_seam_event(text,text)",
        "qwip_record_settlement(uuid,integer,text,text,text,jsonb,text,text,integer,integer)",
        "qwip_recount_refunds(uuid)",
        "qwip_refundable_parts(pod_sessions)",
        "qwip_refunds_by_day(timestamp with time zone,text)",
        "qwip_reserve_refund(uuid,uuid,integer,text)",
        "qwip_retry_access_code_work(uuid,double precision)",
        "qwip_seam_code_set(text,text,text)",
        "qwip_seam_event_seen(text)",
        "qwip_seam_lock_unlocked(text,text,text,timestamp with time zone)",
        "qwip_service_gauges()",
        "qwip_service_only(text[])",
        "qwip_session_of_access_code(text)",
        "qwip_session_refunds(uuid)",
        "qwip_set_pod_disabled(text,text)",
        "qwip_start_session(text,text,uuid,text,bigint,text,text,text,text,integer,jsonb,jsonb)",
        "qwip_start_session_once(text,text,uuid,text,bigint,text,text,text,text,integer,jsonb,"
        "jsonb)",
        "qwip_sync_refunds(uuid,text,jsonb,text,text,jsonb)",
        "qwip_take_booking_slot(jsonb,integer)",
        "qwip_update_access_code_status(uuid,text,text)",
        "qwip_waive_charge(uuid,text)",
    ]
    assert [(row["anon"], row["authenticated"], row["service_role"]) for row in rows] == [
        (False, False, True)
    ] * len(rows)


async def test_anon_sees_no_rows_and_writes_none_where_the_service_role_sees_all(
    supabase_like_database: str,
) -> None:
    async with supabase_over(supabase_like_database) as (service, _):
        pod = await service.insert_pod(POD)
        await service.start_session(start_request(pod.id))
    connection = await asyncpg.connect(supabase_like_database)
    try:
        async with connection.transaction():
            # What PostgREST does for a request made with the anon key: since 0003 anon
            # holds no grant at all, so it is refused outright.
            await connection.execute("set local role anon")
            with pytest.raises(
                asyncpg.InsufficientPrivilegeError, match="^permission denied for table pods$"
            ):
                await connection.fetchval("select count(*) from pods")
        async with connection.transaction():
            # Row level security still holds behind the grants, were they given back.
            await connection.execute("grant select, insert on all tables in schema public to anon")
            await connection.execute("set local role anon")
            for table in ("pods", "pod_sessions", "stripe_events", "email_outbox"):
                assert await connection.fetchval(f"select count(*) from {table}") == 0
            with pytest.raises(
                asyncpg.InsufficientPrivilegeError, match="violates row-level security policy"
            ):
                await connection.execute("insert into pods (name, price) values ('mine', 0)")
        async with connection.transaction():
            await connection.execute("set local role anon")
            with pytest.raises(
                asyncpg.InsufficientPrivilegeError, match="permission denied for function"
            ):
                await connection.fetch("select * from qwip_get_session(gen_random_uuid())")
        async with connection.transaction():
            await connection.execute("set local role anon")
            # the SetupIntents' outcomes (0005): not even readable
            with pytest.raises(
                asyncpg.InsufficientPrivilegeError, match="permission denied for table"
            ):
                await connection.fetchval("select count(*) from setup_intent_outcomes")
        async with connection.transaction():
            await connection.execute("set local role service_role")
            assert await connection.fetchval("select count(*) from setup_intent_outcomes") == 1
            assert await connection.fetchval("select count(*) from pods") == 1
            assert await connection.fetchval("select count(*) from pod_sessions") == 1
            assert await connection.fetchval("select count(*) from email_outbox") == 1
    finally:
        await connection.close()


async def test_anon_and_authenticated_may_read_and_run_nothing_now_or_later(
    supabase_like_database: str,
) -> None:
    connection = await asyncpg.connect(supabase_like_database)
    try:
        # What a later migration makes, after Supabase's default grants and ours.
        await connection.execute("""
            create table later_table (id bigint generated by default as identity, note text);
            create sequence later_sequence;
            create function qwip_later() returns integer language sql as 'select 1';
        """)
        rows = await connection.fetch("""
            select r.rolname as role, c.oid::regclass::text as object,
                   has_table_privilege(r.oid, c.oid,
                       'select, insert, update, delete, truncate, references, trigger') as any
            from pg_class c, pg_roles r
            where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'v', 'm', 'p')
              and r.rolname in ('anon', 'authenticated')
            union all
            select r.rolname, c.oid::regclass::text,
                   has_sequence_privilege(r.oid, c.oid, 'usage, select, update')
            from pg_class c, pg_roles r
            where c.relnamespace = 'public'::regnamespace and c.relkind = 'S'
              and r.rolname in ('anon', 'authenticated')
            union all
            select r.rolname, p.oid::regprocedure::text,
                   has_function_privilege(r.oid, p.oid, 'execute')
            from pg_proc p, pg_roles r
            where p.pronamespace = 'public'::regnamespace
              and r.rolname in ('anon', 'authenticated')
            order by 1, 2""")
        service_role_runs_later = await connection.fetchval(
            "select has_function_privilege('service_role', 'qwip_later()', 'execute')"
        )
    finally:
        await connection.close()
    objects = {row["object"] for row in rows}
    assert {"pods", "email_outbox", "later_table", "later_sequence", "qwip_later()"} <= objects
    assert {"qwip_service_only(text[])", "qwip_get_session(uuid,text)"} <= objects
    assert [(row["role"], row["object"]) for row in rows if row["any"]] == []
    assert service_role_runs_later is True


@pytest.fixture
def own_database(postgres_server_url: str) -> Iterator[str]:
    """A database of this test's own, migrated as the service migrates."""
    with migrated_database(postgres_server_url, "qwip_service_only") as url:
        yield url


TABLES_AND_GRANTS = """
select c.oid::regclass::text, coalesce(array_to_string(c.relacl, ','), '')
from pg_class c where c.relnamespace = 'public'::regnamespace
union all
select p.oid::regprocedure::text, coalesce(array_to_string(p.proacl, ','), '')
from pg_proc p where p.pronamespace = 'public'::regnamespace
order by 1
"""


@pytest.mark.parametrize(
    ("name", "refusal"),
    [
        (
            "qwip_postpone_email(bigint, integer, text) from public; create table pwned (); --",
            "expected a right parenthesis",
        ),
        (
            "qwip_postpone_email(bigint, integer, text) from public; drop table pods; --",
            "expected a right parenthesis",
        ),
        ("pods; drop table pods", "expected a left parenthesis"),
        ("qwip_no_such_function()", 'function "qwip_no_such_function()" does not exist'),
    ],
)
async def test_service_only_runs_no_statement_hidden_in_a_function_name(
    own_database: str, name: str, refusal: str
) -> None:
    connection = await asyncpg.connect(own_database)
    try:
        before = await connection.fetch(TABLES_AND_GRANTS)
        with pytest.raises(asyncpg.PostgresError, match=f"^{re.escape(refusal)}$"):
            await connection.execute("select qwip_service_only($1)", [name])
        assert await connection.fetch(TABLES_AND_GRANTS) == before
        assert await connection.fetchval("select to_regclass('pwned')") is None
        assert await connection.fetchval("select count(*) from pods") == 0
    finally:
        await connection.close()


async def test_service_only_still_hands_a_real_function_to_the_service(
    own_database: str,
) -> None:
    connection = await asyncpg.connect(own_database)
    try:
        await connection.execute(
            "create function qwip_later() returns integer language sql as 'select 1'"
        )
        await connection.execute("grant execute on function qwip_later() to public")
        await connection.execute("select qwip_service_only($1)", ["qwip_later()"])
        acl = await connection.fetchval(
            "select array_to_string(proacl, ',') from pg_proc where proname = 'qwip_later'"
        )
    finally:
        await connection.close()
    # The owner alone (and service_role, where it exists): PUBLIC's grant is gone.
    assert not any(entry.startswith("=") for entry in acl.split(","))


# Owed sessions


async def test_an_owed_session_is_found_by_its_email_in_any_case_or_by_its_card(
    db: Database,
) -> None:
    pod = await db.insert_pod(POD)
    request = start_request(pod.id)
    await db.start_session(request)
    await db.record_card_fingerprint(request.session_id, fingerprint="fp_card")
    assert await db.find_unpaid_session(email="ADA@example.com", fingerprint=None) is None
    await db.end_session(request.session_id, max_minutes=180, lease_seconds=60)
    assert await paid(db, request.session_id, PaymentStatus.FAILED) == "recorded"
    found = request.session_id
    assert await db.find_unpaid_session(email="ADA@Example.com", fingerprint=None) == found
    assert await db.find_unpaid_session(email="bo@example.com", fingerprint="fp_card") == found
    assert await db.find_unpaid_session(email="bo@example.com", fingerprint="fp_other") is None
    assert await db.find_unpaid_session(email=None, fingerprint=None) is None
    # Paid later: owed no more.
    assert await paid(db, request.session_id, PaymentStatus.SUCCEEDED) == "recorded"
    assert await db.find_unpaid_session(email="ada@example.com", fingerprint="fp_card") is None


async def test_callers_racing_for_the_next_payment_attempt_share_one(db: Database) -> None:
    pod = await db.insert_pod(POD)
    request = start_request(pod.id)
    await db.start_session(request)
    session_id = request.session_id
    assert await db.begin_recovery(session_id) == RecoveryAttempt(0, None)
    assert await db.begin_recovery(uuid4()) is None
    first = await asyncio.gather(
        *(db.begin_recovery(session_id, after_attempt=0) for _ in range(5))
    )
    assert first == [RecoveryAttempt(1, None)] * 5
    await db.record_recovery(session_id, attempt=1, payment_intent_id="pi_1")
    # A late caller's record of an attempt that is not the session's any more changes nothing.
    await db.record_recovery(session_id, attempt=0, payment_intent_id="pi_0")
    assert await db.begin_recovery(session_id) == RecoveryAttempt(1, "pi_1")
    assert await db.begin_recovery(session_id, after_attempt=1) == RecoveryAttempt(2, None)
    assert await db.begin_recovery(session_id, after_attempt=1) == RecoveryAttempt(2, None)


# Refunds and disputes


async def test_refunds_are_reserved_within_what_was_paid_and_recorded_once(
    db: Database, sql: asyncpg.Connection
) -> None:
    from svc.models.refunds import StripeRefund

    session_id = await ended_session(db)
    assert await paid(db, session_id, PaymentStatus.SUCCEEDED) == "recorded"
    request = UUID(int=1)
    too_much = await db.reserve_refund(session_id, request_id=request, amount_pence=264, reason="x")
    assert (too_much.outcome, too_much.refundable_pence, too_much.parts) == ("too_much", 263, ())
    reserved = await db.reserve_refund(session_id, request_id=request, amount_pence=200, reason="x")
    [part] = reserved.parts
    assert (reserved.outcome, part.payment_intent_id, part.amount_pence, part.request_id) == (
        "reserved",
        "pi_1",
        200,
        request,
    )
    # Reserved and not recorded: the next request is told to finish it first.
    assert (
        await db.reserve_refund(session_id, request_id=request, amount_pence=1, reason=None)
    ).outcome == "unfinished"
    money = await db.get_session_refunds(session_id)
    assert money is not None
    assert (money.paid_pence, money.reserved_pence, money.refunded_pence) == (263, 200, 0)
    assert [p.id for p in money.unfinished] == [part.id]

    email = QueuedEmail(
        dedupe_key=f"refund:{request}", kind="refund", recipient="a@b.c", payload={}
    )
    assert (
        await db.record_refund(part.id, stripe_refund_id="re_1", state="succeeded", emails=[email])
        == "succeeded"
    )
    # Stripe's list (our refund, and one made in the dashboard), delivered twice.
    listed = [
        StripeRefund(id="re_1", amount_pence=200, state="succeeded", qwip_refund_id=part.id),
        StripeRefund(id="re_2", amount_pence=50, state="succeeded", qwip_refund_id=None),
    ]
    for expected in ("recorded", "duplicate"):
        outcome = await db.sync_refunds(
            session_id, payment_intent_id="pi_1", refunds=listed, event_id="evt_r", event_type="x"
        )
        assert outcome == expected
    money = await db.get_session_refunds(session_id)
    assert money is not None
    assert (money.reserved_pence, money.refunded_pence, money.refundable_pence) == (250, 250, 13)
    assert (
        await db.reserve_refund(session_id, request_id=request, amount_pence=None, reason=None)
    ).parts[0].amount_pence == 13
    assert await sql.fetchval("select count(*) from email_outbox where kind = 'refund'") == 1

    for expected in ("recorded", "duplicate"):
        outcome = await db.record_dispute(
            session_id, dispute_id="dp_1", event_id="evt_d", event_type="x"
        )
        assert outcome == expected
    assert (
        await sql.fetchval("select dispute_id from pod_sessions where id = $1", session_id)
        == "dp_1"
    )
    assert await db.get_session_refunds(UUID(int=9)) is None


# Seam's events, the locks' health and pods out of service


async def test_lock_health_and_disabling_on_either_backend(db: Database) -> None:
    pod = await db.insert_pod(replace(POD, seam_device_id="lock_1"))
    at = datetime.fromisoformat("2026-11-30T09:00:00+00:00")
    offline = LockHealth(device_id="lock_1", occurred_at=at, online=False)
    alert = QueuedEmail(
        dedupe_key="lock_offline:lock_1:ev_1",
        kind="operator_alert",
        recipient="ops@qwip.test",
        payload={"subject": "s", "text": "t"},
    )
    assert await db.record_lock_health(offline, alert=alert, event_id="ev_1", event_type="x") == (
        "alerted"
    )
    assert await db.record_lock_health(offline, alert=alert, event_id="ev_1", event_type="x") == (
        "duplicate"
    )
    again = replace(alert, dedupe_key="lock_offline:lock_1:ev_2")
    assert await db.record_lock_health(offline, alert=again, event_id="ev_2", event_type="x") == (
        "recorded"
    )
    found = await db.get_pod_by_id(pod.id)
    assert found is not None and found.out_of_service == "its door lock is offline"
    assert (
        await db.record_lock_health(
            replace(offline, device_id="lock_9"), alert=None, event_id="ev_3", event_type="x"
        )
        == "unknown"
    )

    low = LockHealth("lock_1", at, battery_level=Decimal("0.15"), battery_low=True)
    assert await db.record_lock_health(low, alert=None) == "recorded"
    assert await db.set_pod_disabled("pod1", reason="cleaning") is True
    [listed] = await db.list_pods()
    assert (listed.disabled_reason, listed.lock_online) == ("cleaning", False)
    assert (listed.lock_battery_level, listed.lock_battery_low) == (Decimal("0.150"), True)
    assert await db.set_pod_disabled("pod1", reason=None) is True
    assert await db.set_pod_disabled("pod9", reason=None) is False
    assert await db.is_seam_event_processed("ev_1") is True
    assert await db.is_seam_event_processed("ev_9") is False


async def test_code_events_and_unlocks_on_either_backend(db: Database) -> None:
    pod = await db.insert_pod(replace(POD, seam_device_id="lock_1"))
    request = start_request(pod.id)
    await db.start_session(request)
    session_id = request.session_id
    await db.record_access_code(session_id, access_code_id="ac_1", status="setting")
    assert await db.get_session_unlocks(session_id) == SessionUnlocks()

    at = datetime.fromisoformat("2026-11-30T09:00:00+00:00")
    assert await db.record_unlock(
        "ev_1", "lock.unlocked", access_code_id="ac_1", occurred_at=at
    ) == ("recorded")
    assert await db.record_unlock(
        "ev_1", "lock.unlocked", access_code_id="ac_1", occurred_at=at
    ) == ("duplicate")
    assert await db.record_unlock(
        "ev_2", "lock.unlocked", access_code_id="ac_9", occurred_at=at
    ) == ("unknown")
    assert await db.get_session_unlocks(session_id) == SessionUnlocks(
        first_unlocked_at=at, unlock_count=1
    )
    assert await db.get_session_of_access_code("ac_1") == session_id
    # No backup code to be had: given up, and then no event finds the session any more.
    assert await db.fail_access_code_without_backup(session_id) is True
    assert await db.get_session_of_access_code("ac_1") is None
    assert await db.record_seam_event("ev_3", "access_code.failed_to_set_on_device") is True
    assert await db.record_seam_event("ev_3", "access_code.failed_to_set_on_device") is False
    # A failed code is not set by a late event.
    assert await db.record_code_set("ev_4", "x", access_code_id="ac_1") == "unknown"
    session = await db.get_session_by_id(session_id)
    assert session is not None and session.access_code_status == "failed"
