"""Codes on smart locks, over HTTP, against Seam's own fake server (and Postgres, localstripe,
the SMTP server): put on the lock after booking, taken off after the end, and the failures."""

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
import stripe
from seam import AsyncSeam, SeamHttpApiError

from svc.database_accessor import PostgresDatabase
from svc.env import Settings
from svc.main import create_app
from svc.models.records import NewPod
from svc.seam_accessor import access_code_name
from tests.conftest import free_port
from tests.integration.conftest import SettingsFactory, running
from tests.integration.test_booking_lifecycle import (
    CUSTOMER,
    book,
    deliver,
    save_card,
    started_minutes_ago,
)
from tests.integration.test_database_accessor import start_request
from tests.support.latency_proxy import LatencyProxy
from tests.support.mail import Mailbox
from tests.support.settings import OPERATOR
from tests.support.stripe_helpers import payment_intents_of

SEAM_KEY = "seam_apikey1_token"
LOCK = "august_device_1"
OTHER_LOCK = "august_device_2"
SMART_LOCK_LINE = (
    "The door's smart lock is receiving this code now; it works within a minute or so."
)


@pytest.fixture
def lock_settings(make_settings: SettingsFactory, fake_seam_url: str) -> Settings:
    return make_settings(
        SEAM_API_KEY=SEAM_KEY, SEAM_ENDPOINT=fake_seam_url, SEAM_RETRY_BASE_SECONDS=0.05
    )


def seam_down(make_settings: SettingsFactory, **overrides: Any) -> Settings:
    """Seam unreachable: its address is a port nothing listens on."""
    values: dict[str, Any] = {
        "SEAM_API_KEY": SEAM_KEY,
        "SEAM_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "SEAM_RETRY_BASE_SECONDS": 0.05,
        **overrides,
    }
    return make_settings(**values)


@pytest.fixture
async def client(lock_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(lock_settings)) as http:
        yield http


@pytest.fixture
async def seam(fake_seam_url: str) -> AsyncIterator[AsyncSeam]:
    """The test's own look at the fake Seam, through Seam's SDK."""
    async with AsyncSeam(api_key=SEAM_KEY, endpoint=fake_seam_url) as client:
        yield client


@pytest.fixture
async def pods(db: PostgresDatabase) -> None:
    for name, device in (
        ("locked", LOCK),
        ("frontdoor", OTHER_LOCK),
        ("plain", None),
        ("ghostlock", "no_such_lock"),
        ("thermostat", "ecobee_device_1"),
    ):
        await db.insert_pod(
            NewPod(
                name=name,
                address="1 Lock Lane",
                price=Decimal("0.25"),
                currency="gbp",
                seam_device_id=device,
            )
        )


async def wait_for_status(
    client: httpx.AsyncClient, session_id: UUID, wanted: str, *, timeout: float = 15
) -> dict[str, Any]:
    """The session-status answer once the code's status is `wanted`, as a page polls for it."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/api/session-status?sessionId={session_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["access_code_status"] == wanted:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"status {wanted!r} not reached; last answer {body}")
        await asyncio.sleep(0.05)


def status_body(session_id: UUID, pod: str, status: str, **changes: Any) -> dict[str, Any]:
    return {
        "session_id": str(session_id),
        "pod_name": pod,
        "is_complete": False,
        "smart_lock": True,
        "access_code_status": status,
        "lock_has_code": False,
        "backup_code_in_use": False,
        "first_unlocked_at": None,
        "unlock_count": 0,
        **changes,
    }


async def codes_on_lock(seam: AsyncSeam, session_id: UUID, device: str = LOCK) -> list[Any]:
    name = access_code_name(session_id)
    return [c for c in await seam.access_codes.list(device_id=device) if c.name == name]


async def code_row(sql: asyncpg.Connection, session_id: UUID) -> asyncpg.Record:
    row = await sql.fetchrow(
        "select access_code, access_code_id, access_code_status, access_code_attempts, "
        "start_time from pod_sessions where id = $1",
        session_id,
    )
    assert row is not None
    return row


async def wait_until(condition: Any, *, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_booking_puts_a_time_bound_code_on_the_lock_and_the_end_takes_it_off(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    seam: AsyncSeam,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    _, session_id = await book(client, stripe_client, pod="locked")
    [mail] = await mailbox.wait_for("access_code")
    code = mail.access_code()
    assert SMART_LOCK_LINE in mail.text

    # the fake Seam leaves every code "unset": a real lock moves on to "setting", then "set"
    status = await wait_for_status(client, session_id, "unset")
    assert status == status_body(session_id, "locked", "unset")
    row = await code_row(sql, session_id)
    [on_lock] = await codes_on_lock(seam, session_id)
    assert on_lock.access_code_id == row["access_code_id"]
    assert (on_lock.device_id, on_lock.code, on_lock.type) == (LOCK, code, "time_bound")
    assert on_lock.name == f"qwip-session-{str(session_id)[:8]}"
    start = row["start_time"].replace(microsecond=0)
    assert datetime.fromisoformat(on_lock.starts_at) == start
    assert datetime.fromisoformat(on_lock.ends_at) == start + timedelta(minutes=180)

    await started_minutes_ago(sql, session_id, 630)
    ended = await client.post("/api/end-session", json={"sessionId": str(session_id)})
    assert ended.status_code == 200
    assert (ended.json()["payment_status"], ended.json()["final_cost_pence"]) == ("succeeded", 263)
    status = await wait_for_status(client, session_id, "removed")
    assert status == status_body(session_id, "locked", "removed", is_complete=True)
    with pytest.raises(SeamHttpApiError) as gone:
        await seam.access_codes.get(access_code_id=row["access_code_id"])
    assert gone.value.status_code == 404
    await mailbox.wait_for("receipt")


async def test_the_page_learns_the_codes_status_from_seam_while_it_is_on_its_way(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    _, session_id = await book(client, stripe_client, pod="locked")
    await wait_for_status(client, session_id, "unset")
    await sql.execute(
        "update pod_sessions set access_code_status = 'setting' where id = $1", session_id
    )
    response = await client.get(f"/api/session-status?session_id={session_id}")
    assert (response.status_code, response.json()) == (
        200,
        status_body(session_id, "locked", "unset"),
    )
    assert (await code_row(sql, session_id))["access_code_status"] == "unset"


async def test_one_booking_arriving_three_times_puts_one_code_on_the_lock(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    seam: AsyncSeam,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    card = await save_card(client, stripe_client, pod="locked")
    first = await deliver(client, "setup_intent.succeeded", card.setup_intent, event_id="evt_l1")
    again = await deliver(client, "setup_intent.succeeded", card.setup_intent, event_id="evt_l1")
    confirmed = await client.post(
        "/api/confirm-booking",
        json={"setup_intent_id": card.setup_intent_id, "client_secret": card.client_secret},
    )
    assert (first.json(), again.json()) == ({"status": "success"}, {"status": "duplicate"})
    session_id = UUID(confirmed.json()["session_id"])
    await wait_for_status(client, session_id, "unset")
    await asyncio.sleep(0.5)  # more rounds of the lock worker find nothing more to do
    assert [c.access_code_id for c in await codes_on_lock(seam, session_id)] == [
        (await code_row(sql, session_id))["access_code_id"]
    ]
    await client.post("/api/end-session", json={"sessionId": str(session_id)})
    await wait_for_status(client, session_id, "removed")


async def test_a_code_made_by_an_attempt_whose_answer_was_lost_is_found_not_made_again(
    make_settings: SettingsFactory,
    lock_settings: Settings,
    stripe_client: stripe.StripeClient,
    seam: AsyncSeam,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    # Seam down, and the retry far off: the first attempt fails and nothing else runs
    async with running(create_app(seam_down(make_settings, SEAM_RETRY_BASE_SECONDS=600))) as down:
        _, session_id = await book(down, stripe_client, pod="locked")

        async def first_attempt_failed() -> bool:
            return (await code_row(sql, session_id))["access_code_attempts"] == 1

        await wait_until(first_attempt_failed)
        assert (await down.get(f"/api/session-status?sessionId={session_id}")).json() == (
            status_body(session_id, "locked", "pending")
        )
    # ...but Seam had made the code before its answer was lost
    row = await code_row(sql, session_id)
    start = row["start_time"].replace(microsecond=0)
    made = await seam.access_codes.create(
        device_id=LOCK,
        name=access_code_name(session_id),
        code=row["access_code"],
        starts_at=start.isoformat(),
        ends_at=(start + timedelta(minutes=180)).isoformat(),
    )
    await sql.execute(
        "update pod_sessions set access_code_locked_until = null where id = $1", session_id
    )
    async with running(create_app(lock_settings)) as client:
        await wait_for_status(client, session_id, "unset")
    assert (await code_row(sql, session_id))["access_code_id"] == made.access_code_id
    assert [c.access_code_id for c in await codes_on_lock(seam, session_id)] == [
        made.access_code_id
    ]
    await seam.client.post("/access_codes/delete", json={"access_code_id": made.access_code_id})


@pytest.mark.parametrize(
    ("pod", "reason"),
    [
        ("ghostlock", "Seam has no device 'no_such_lock' (check the pod's seam_device_id)"),
        (
            "thermostat",
            "Seam device 'ecobee_device_1' cannot program online access codes (it is not a "
            "keypad lock Seam can set codes on)",
        ),
    ],
)
async def test_a_lock_that_cannot_take_the_code_ends_the_session_without_charge(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pods: None,
    pod: str,
    reason: str,
) -> None:
    card, session_id = await book(client, stripe_client, pod=pod)
    await mailbox.wait_for("access_code")  # sent at once, before the lock is tried
    [sorry] = await mailbox.wait_for("lock_failed")
    assert (sorry.recipients, sorry.subject) == (
        [CUSTOMER],
        f"Your Qwip session in {pod} could not start",
    )
    assert "you have not been charged" in sorry.text
    [alert] = await mailbox.wait_for("operator_alert")
    assert (alert.recipients, alert.subject) == (
        [OPERATOR],
        f"qwipsvc: the lock of {pod} did not take a code; session ended",
    )
    assert f"{reason}. The session was ended without charge" in alert.text

    status = await client.get(f"/api/session-status?sessionId={session_id}")
    assert (status.status_code, status.json()) == (
        200,
        status_body(session_id, pod, "failed", is_complete=True),
    )
    preview = (await client.get(f"/api/end-session-preview?sessionId={session_id}")).json()
    assert (preview["cost_pence"], preview["payment_status"], preview["is_complete"]) == (
        0,
        "not_charged",
        True,
    )
    assert (await client.get(f"/api/pod?podName={pod}")).json()["in_use"] is False
    # a permanent refusal is not retried
    assert (await code_row(sql, session_id))["access_code_attempts"] == 1
    # the customer ending it from the e-mail's link afterwards is charged nothing either
    ended = await client.post("/api/end-session", json={"sessionId": str(session_id)})
    result = ended.json()
    assert (ended.status_code, result) == (
        200,
        {
            "status": "success",
            "session_id": str(session_id),
            "final_cost": "0.00",
            "final_cost_pence": 0,
            "currency": "gbp",
            "charged": False,
            "payment_status": "not_charged",
            "end_time": result["end_time"],
            "error": None,
            "hold_pence": None,
            "captured_pence": None,
            "released_pence": None,
        },
    )
    assert await payment_intents_of(stripe_client, card.customer_id) == []
    await asyncio.sleep(0.3)
    assert mailbox.messages("receipt") == []


async def test_seam_down_at_the_start_is_retried_then_the_session_ends_without_charge(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    async with running(create_app(seam_down(make_settings))) as client:
        _, session_id = await book(client, stripe_client, pod="locked")
        await mailbox.wait_for("lock_failed")
        [alert] = await mailbox.wait_for("operator_alert")
        status = (await client.get(f"/api/session-status?sessionId={session_id}")).json()
    assert "(Seam device august_device_1): reading the lock: ConnectError." in alert.text
    assert status == status_body(session_id, "locked", "failed", is_complete=True)
    assert (await code_row(sql, session_id))["access_code_attempts"] == 5


async def test_a_code_that_cannot_be_taken_off_is_retried_and_reported_and_holds_up_nothing(
    make_settings: SettingsFactory,
    lock_settings: Settings,
    stripe_client: stripe.StripeClient,
    seam: AsyncSeam,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    async with running(create_app(lock_settings)) as client:
        _, session_id = await book(client, stripe_client, pod="locked")
        await wait_for_status(client, session_id, "unset")
    access_code_id = (await code_row(sql, session_id))["access_code_id"]
    await started_minutes_ago(sql, session_id, 630)

    async with running(create_app(seam_down(make_settings))) as down:
        ended = await down.post("/api/end-session", json={"sessionId": str(session_id)})
        assert (ended.status_code, ended.json()["payment_status"]) == (200, "succeeded")
        await mailbox.wait_for("receipt")
        [alert] = await mailbox.wait_for("operator_alert")
        status = (await down.get(f"/api/session-status?sessionId={session_id}")).json()
    assert alert.subject == "qwipsvc: an ended session's code is still on the lock of locked"
    assert f"access code {access_code_id}): deleting the code: ConnectError." in alert.text
    assert status == status_body(session_id, "locked", "removing", is_complete=True)
    assert [c.access_code_id for c in await codes_on_lock(seam, session_id)] == [access_code_id]

    # Seam is back: the next attempt takes it off
    async with running(create_app(lock_settings)) as client:
        await wait_for_status(client, session_id, "removed")
    assert await codes_on_lock(seam, session_id) == []


async def test_a_session_ended_for_running_too_long_has_its_code_taken_off(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    seam: AsyncSeam,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    _, session_id = await book(client, stripe_client, pod="locked")
    await wait_for_status(client, session_id, "unset")
    await started_minutes_ago(sql, session_id, 200 * 60)
    await mailbox.wait_for("receipt")
    await wait_for_status(client, session_id, "removed")
    assert await codes_on_lock(seam, session_id) == []


async def test_a_pod_without_a_lock_keeps_a_locally_generated_code(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    seam: AsyncSeam,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    _, session_id = await book(client, stripe_client, pod="plain")
    [mail] = await mailbox.wait_for("access_code")
    assert SMART_LOCK_LINE not in mail.text
    await asyncio.sleep(0.5)
    response = await client.get(f"/api/session-status?sessionId={session_id}")
    assert (response.status_code, response.json()) == (
        200,
        status_body(session_id, "plain", "local", smart_lock=False, lock_has_code=None),
    )
    row = await code_row(sql, session_id)
    assert (row["access_code_id"], row["access_code_status"]) == (None, None)


async def test_without_a_seam_key_a_pod_with_a_lock_gets_a_local_code(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    seam: AsyncSeam,
    mailbox: Mailbox,
    pods: None,
) -> None:
    async with running(create_app(make_settings())) as client:
        _, session_id = await book(client, stripe_client, pod="locked")
        [mail] = await mailbox.wait_for("access_code")
        await asyncio.sleep(0.5)
        status = (await client.get(f"/api/session-status?sessionId={session_id}")).json()
        lock = await client.get(f"/api/lock-status?podName=locked&sessionId={session_id}")
    assert SMART_LOCK_LINE not in mail.text
    assert status == status_body(
        session_id, "locked", "local", smart_lock=False, lock_has_code=None
    )
    assert await codes_on_lock(seam, session_id) == []
    assert (lock.status_code, lock.json()) == (
        404,
        {
            "detail": "Pod 'locked' has a smart lock, but smart locks are not enabled on this "
            "service."
        },
    )


@pytest.mark.parametrize(
    ("query", "status", "detail"),
    [
        ("sessionId=6a1f2c3e-1111-4222-8333-944455556666", 404, "No session with this id."),
        ("", 422, "Give the session as sessionId (or session_id)."),
        (
            "sessionId=abc",
            422,
            "sessionId (query): a session id is a UUID, like the one in the end-session link.",
        ),
    ],
)
async def test_session_status_rejects_unknown_and_malformed_ids(
    client: httpx.AsyncClient, query: str, status: int, detail: str
) -> None:
    response = await client.get(f"/api/session-status?{query}")
    assert (response.status_code, response.json()) == (status, {"detail": detail})


async def open_session(db: PostgresDatabase, sql: asyncpg.Connection, pod_name: str) -> UUID:
    """An open session of the pod, as a booking leaves it, that the lock worker leaves alone:
    these tests ask about the lock, not about its codes."""
    pod = await db.get_pod_by_name(pod_name)
    assert pod is not None
    request = start_request(pod.id, setup_intent=f"seti_{uuid4().hex}")
    await db.start_session(request)
    await sql.execute(
        "update pod_sessions set access_code_locked_until = now() + interval '1 hour' "
        "where id = $1",
        request.session_id,
    )
    return request.session_id


NOT_THE_PODS_SESSION = {
    "detail": "The lock's state is shown only with an open session of this pod: give the "
    "sessionId from its booking e-mail."
}


@pytest.fixture
def seam_proxy(fake_seam_url: str) -> Iterator[LatencyProxy]:
    """The fake Seam behind a proxy that counts the requests it is sent."""
    proxy = LatencyProxy(fake_seam_url, free_port()).start()
    yield proxy
    proxy.stop()


def lock_reads(proxy: LatencyProxy) -> int:
    return sum(1 for method, path, _ in proxy.seen if path == "/devices/get")


async def test_lock_status_reads_the_lock(
    make_settings: SettingsFactory,
    fake_seam_url: str,
    seam: AsyncSeam,
    db: PostgresDatabase,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    session_id = await open_session(db, sql, "frontdoor")
    settings = make_settings(
        SEAM_API_KEY=SEAM_KEY, SEAM_ENDPOINT=fake_seam_url, LOCK_STATUS_CACHE_SECONDS=0
    )
    async with running(create_app(settings)) as client:
        response = await client.get(f"/api/lock-status?podName=frontdoor&sessionId={session_id}")
        assert (response.status_code, response.json()) == (200, {"locked": True, "online": True})
        await seam.locks.unlock_door(device_id=OTHER_LOCK)
        try:
            unlocked = await client.get(
                f"/api/lock-status?pod_name=frontdoor&session_id={session_id}"
            )
            assert (unlocked.status_code, unlocked.json()) == (
                200,
                {"locked": False, "online": True},
            )
        finally:
            await seam.locks.lock_door(device_id=OTHER_LOCK)


@pytest.mark.parametrize(
    ("query", "session_of", "status", "detail"),
    [
        ("podName=plain", "plain", 404, "Pod 'plain' has no smart lock configured."),
        ("podName=nowhere", "locked", 403, NOT_THE_PODS_SESSION["detail"]),
        ("", "locked", 422, "Give the pod as podName (or pod_name) or podId (or pod_id)."),
        ("podName=locked", None, 422, "Give the session as sessionId (or session_id)."),
        (
            "podName=ghostlock",
            "ghostlock",
            502,
            "The smart-lock service does not know this pod's lock.",
        ),
    ],
)
async def test_lock_status_says_clearly_when_there_is_no_lock_to_read(
    client: httpx.AsyncClient,
    db: PostgresDatabase,
    sql: asyncpg.Connection,
    pods: None,
    query: str,
    session_of: str | None,
    status: int,
    detail: str,
) -> None:
    if session_of is not None:
        query += f"&sessionId={await open_session(db, sql, session_of)}"
    response = await client.get(f"/api/lock-status?{query}")
    assert (response.status_code, response.json()) == (status, {"detail": detail})


async def test_lock_status_is_503_while_seam_is_unreachable(
    make_settings: SettingsFactory, db: PostgresDatabase, sql: asyncpg.Connection, pods: None
) -> None:
    session_id = await open_session(db, sql, "locked")
    async with running(create_app(seam_down(make_settings))) as client:
        response = await client.get(f"/api/lock-status?podName=locked&sessionId={session_id}")
    assert (response.status_code, response.json()) == (
        503,
        {"detail": "The smart-lock service cannot be reached right now; please try again shortly."},
    )


async def test_lock_status_is_refused_without_that_pods_open_session_and_seam_is_not_asked(
    make_settings: SettingsFactory,
    seam_proxy: LatencyProxy,
    db: PostgresDatabase,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    own = await open_session(db, sql, "locked")
    others = await open_session(db, sql, "frontdoor")
    ended = await open_session(db, sql, "thermostat")
    await sql.execute("update pod_sessions set end_time = now() where id = $1", ended)
    pod_id = (await db.get_pod_by_name("locked")).id  # type: ignore[union-attr]
    settings = make_settings(SEAM_API_KEY=SEAM_KEY, SEAM_ENDPOINT=seam_proxy.url)
    async with running(create_app(settings)) as client:
        refused = [
            await client.get(f"/api/lock-status?{query}")
            for query in (
                f"podName=locked&sessionId={uuid4()}",  # no such session
                f"podName=locked&sessionId={others}",  # another pod's session
                f"podId={pod_id}&sessionId={others}",
                f"podName=thermostat&sessionId={ended}",  # its pod's, but ended
                f"podName=nowhere&sessionId={own}",  # a pod that does not exist
            )
        ]
        no_session = await client.get("/api/lock-status?podName=locked")
        reads_before = lock_reads(seam_proxy)
        answered = await client.get(f"/api/lock-status?podId={pod_id}&sessionId={own}")
    assert [(r.status_code, r.json()) for r in refused] == [(403, NOT_THE_PODS_SESSION)] * 5
    assert (no_session.status_code, no_session.json()) == (
        422,
        {"detail": "Give the session as sessionId (or session_id)."},
    )
    assert reads_before == 0
    assert (answered.status_code, answered.json()) == (200, {"locked": True, "online": True})
    assert lock_reads(seam_proxy) == 1


async def test_lock_status_asks_seam_once_per_lock_within_the_cache_time(
    make_settings: SettingsFactory,
    seam_proxy: LatencyProxy,
    db: PostgresDatabase,
    sql: asyncpg.Connection,
    pods: None,
) -> None:
    session_id = await open_session(db, sql, "locked")
    query = f"/api/lock-status?podName=locked&sessionId={session_id}"
    settings = make_settings(
        SEAM_API_KEY=SEAM_KEY, SEAM_ENDPOINT=seam_proxy.url, LOCK_STATUS_CACHE_SECONDS=1
    )
    async with running(create_app(settings)) as client:
        first = await client.get(query)
        second = await client.get(query)
        together = await asyncio.gather(*(client.get(query) for _ in range(5)))
        within = lock_reads(seam_proxy)
        await asyncio.sleep(1.2)
        later = await client.get(query)
    expected = (200, {"locked": True, "online": True})
    answers = [first, second, *together, later]
    assert [(r.status_code, r.json()) for r in answers] == [expected] * len(answers)
    assert within == 1
    assert lock_reads(seam_proxy) == 2


def test_lock_status_cache_seconds_defaults_to_ten(make_settings: SettingsFactory) -> None:
    assert make_settings().LOCK_STATUS_CACHE_SECONDS == 10
