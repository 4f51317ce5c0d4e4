"""The Supabase backend against a real project, when SUPABASE_TEST_URL and SUPABASE_TEST_KEY
name one: its PostgREST, its roles and its row level security, not a stand-in.

Use a throwaway project with every file of supabase/migrations/ applied and its service-role
(secret) key. Every row the test writes carries a random tag and is deleted at the end.
SUPABASE_TEST_ANON_KEY, when also set, checks that the anon key reads and runs nothing.
"""

import os
import secrets
from collections.abc import AsyncIterator
from decimal import Decimal
from uuid import uuid4

import httpx
import pytest
from postgrest import APIError
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from svc.database_accessor import InvalidPod, PodNameTaken, SupabaseDatabase
from svc.models.records import ChargeClaim, NewPod, PodChanges, QueuedEmail, StartSessionRequest
from svc.types import PaymentStatus

LIVE_URL = os.environ.get("SUPABASE_TEST_URL", "")
LIVE_KEY = os.environ.get("SUPABASE_TEST_KEY", "")
ANON_KEY = os.environ.get("SUPABASE_TEST_ANON_KEY", "")

pytestmark = pytest.mark.skipif(
    not (LIVE_URL and LIVE_KEY),
    reason="SUPABASE_TEST_URL and SUPABASE_TEST_KEY are not set: no live Supabase project",
)


async def plain_client(key: str) -> AsyncClient:
    return await acreate_client(LIVE_URL, key, AsyncClientOptions(httpx_client=httpx.AsyncClient()))


@pytest.fixture
def tag() -> str:
    return f"live-{secrets.token_hex(4)}"


@pytest.fixture
async def admin(tag: str) -> AsyncIterator[AsyncClient]:
    """The project through the plain supabase client, to delete what the test wrote."""
    client = await plain_client(LIVE_KEY)
    yield client
    await client.table("email_outbox").delete().like("dedupe_key", f"%{tag}%").execute()
    await client.table("stripe_events").delete().like("id", f"evt_{tag}%").execute()
    await client.table("pod_sessions").delete().like("setup_intent_id", f"seti_{tag}%").execute()
    await client.table("pods").delete().like("name", f"{tag}%").execute()
    await client.postgrest.aclose()


@pytest.fixture
async def live() -> AsyncIterator[SupabaseDatabase]:
    database = await SupabaseDatabase.connect(LIVE_URL, LIVE_KEY)
    yield database
    await database.close()


def start_request(pod_id: int, tag: str, event: str) -> StartSessionRequest:
    session_id = uuid4()
    return StartSessionRequest(
        event_id=f"evt_{tag}_{event}",
        event_type="setup_intent.succeeded",
        session_id=session_id,
        setup_intent_id=f"seti_{tag}",
        pod_id=pod_id,
        user_email="ada@example.com",
        customer_id="cus_live",
        payment_method="pm_live",
        access_code="123456",
        free_minutes=5,
        started_email=QueuedEmail(
            dedupe_key=f"access_code:{tag}:{session_id}",
            kind="access_code",
            recipient="ada@example.com",
            payload={"access_code": "123456"},
        ),
        unavailable_email=None,
    )


async def test_a_session_from_start_to_payment_on_a_live_project(
    live: SupabaseDatabase, admin: AsyncClient, tag: str
) -> None:
    await live.ping()
    pod = await live.insert_pod(
        NewPod(name=tag, address="Live Street", price=Decimal("0.25"), currency="gbp")
    )
    assert (str(pod.price), pod.in_use) == ("0.2500", False)
    with pytest.raises(PodNameTaken):
        await live.insert_pod(NewPod(name=tag, address="", price=Decimal(1), currency="gbp"))
    with pytest.raises(InvalidPod, match="^The price per minute cannot be negative.$"):
        await live.insert_pod(
            NewPod(name=f"{tag}-bad", address="", price=Decimal("-1"), currency="gbp")
        )
    assert await live.get_pod_by_name(tag) == pod
    assert await live.get_pod_by_id(pod.id) == pod
    updated = await live.update_pod(tag, PodChanges(price=Decimal("0.3")))
    assert updated is not None and str(updated.price) == "0.3000"

    request = start_request(pod.id, tag, "1")
    started = await live.start_session(request)
    assert (started.outcome, started.session_id) == ("started", request.session_id)
    assert (await live.start_session(request)).outcome == "duplicate"
    again = await live.start_session(start_request(pod.id, tag, "2"))
    assert (again.outcome, again.session_id) == ("existing", request.session_id)
    assert await live.is_event_processed(f"evt_{tag}_1")

    session = await live.get_session_by_setup_intent(f"seti_{tag}")
    assert session is not None and session.id == request.session_id
    assert (str(session.price_per_minute), session.free_minutes, session.end_time) == (
        "0.3000",
        5,
        None,
    )
    assert session.now >= session.start_time

    closed = await live.end_session(request.session_id, max_minutes=180, lease_seconds=60)
    assert closed is not None and closed.session.end_time is not None and closed.charge_claimed
    # the end holds the lease: another caller fixes the cost but waits
    assert await live.claim_charge(request.session_id, cost_pence=263, lease_seconds=60) == (
        ChargeClaim(cost_pence=263, claimed=False)
    )
    assert await live.claim_charge(request.session_id, cost_pence=999, lease_seconds=60) == (
        ChargeClaim(cost_pence=263, claimed=False)
    )
    outcome = await live.record_payment(
        request.session_id,
        cost_pence=999,
        status=PaymentStatus.SUCCEEDED,
        payment_intent_id=f"pi_{tag}",
        error=None,
        emails=[],
    )
    assert outcome == "recorded"
    ended = await live.get_session_by_id(request.session_id)
    assert ended is not None
    assert (ended.cost_pence, ended.payment_status) == (263, PaymentStatus.SUCCEEDED)
    assert ended.end_time is not None and ended.end_time >= ended.start_time
    assert (await live.get_pod_by_id(pod.id)).in_use is False  # type: ignore[union-attr]


async def test_the_outbox_on_a_live_project(
    live: SupabaseDatabase, admin: AsyncClient, tag: str
) -> None:
    key = f"receipt:{tag}"
    await live.queue_emails(
        [QueuedEmail(dedupe_key=key, kind="receipt", recipient="ada@example.com", payload={})]
    )
    # short leases: other rows of a shared project are handed back almost at once
    mine = [e for e in await live.claim_emails(limit=100, lease_seconds=1) if e.dedupe_key == key]
    assert [(e.kind, e.attempts) for e in mine] == [("receipt", 1)]
    await live.mark_email_failed(mine[0].id, retry_in_seconds=0, error="smtp down")
    again = [e for e in await live.claim_emails(limit=100, lease_seconds=1) if e.dedupe_key == key]
    assert [e.attempts for e in again] == [2]
    await live.mark_emails_sent([again[0].id])
    after = [e for e in await live.claim_emails(limit=100, lease_seconds=1) if e.dedupe_key == key]
    assert after == []


@pytest.mark.skipif(
    bool(LIVE_URL and LIVE_KEY) and not ANON_KEY, reason="SUPABASE_TEST_ANON_KEY is not set"
)
async def test_the_anon_key_reads_and_runs_nothing(
    live: SupabaseDatabase, admin: AsyncClient, tag: str
) -> None:
    await live.insert_pod(NewPod(name=tag, address="", price=Decimal(1), currency="gbp"))
    anon = await plain_client(ANON_KEY)
    try:
        # No grant on the tables since 0003 (row level security hides the rows behind it).
        with pytest.raises(APIError) as refused:
            await anon.table("pods").select("id").execute()
        assert refused.value.code == "42501"
        with pytest.raises(APIError) as raised:
            await anon.rpc("qwip_claim_emails", {"p_limit": 1, "p_lease_seconds": 1}).execute()
        assert raised.value.code == "42501"
    finally:
        await anon.postgrest.aclose()
