"""The Supabase backend's contract with PostgREST: the exact request of every operation,
and how the backend reads each kind of answer, from PostgREST-shaped replies."""

import base64
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx
import pytest
from postgrest import APIError

from svc.database_accessor import (
    DatabaseUnavailable,
    InvalidPod,
    PodNameTaken,
    SupabaseDatabase,
)
from svc.env import ConfigurationError
from svc.models.operator import SessionRefund
from svc.models.records import (
    BackupCode,
    ChargeClaim,
    EndedSession,
    LockHealth,
    NewPod,
    OutboxEmail,
    Pod,
    PodChanges,
    QueuedEmail,
    RecoveryAttempt,
    ServiceGauges,
    SessionRecord,
    SessionUnlocks,
    StartOutcome,
    StartSessionRequest,
)
from svc.types import PaymentStatus

PROJECT = "https://abcd.supabase.co"
KEY = "sb_secret_contract_key"
SESSION = UUID("0b0d8e38-6a52-4a57-9d9a-1f4f0e6c2b11")
POD_ROW = {
    "id": 7,
    "name": "pod1",
    "address": "1 Demo Street",
    "price": "0.2500",
    "currency": "gbp",
    "in_use": False,
    "seam_device_id": None,
    "disabled_reason": None,
    "lock_online": None,
    "lock_battery_level": None,
    "lock_battery_low": False,
}
POD = Pod(
    id=7,
    name="pod1",
    address="1 Demo Street",
    price=Decimal("0.2500"),
    currency="gbp",
    in_use=False,
    seam_device_id=None,
)
POD_SELECT = (
    "select",
    "id,name,address,price::text,currency,in_use,seam_device_id,disabled_reason,lock_online,"
    "lock_battery_level::text,lock_battery_low",
)
SESSION_ROW = {
    "id": str(SESSION),
    "pod_id": 7,
    "pod_name": "pod1",
    "pod_address": "1 Demo Street",
    "seam_device_id": None,
    "user_email": "ada@example.com",
    "start_time": "2026-11-26T10:00:00.12345+00:00",
    "end_time": "2026-11-26T10:10:30+00:00",
    "price_per_minute": "0.2500",
    "free_minutes": 0,
    "currency": "gbp",
    "stripe_customer_id": "cus_1",
    "stripe_payment_method": "pm_1",
    "setup_intent_id": "seti_1",
    "access_code": "123456",
    "access_code_id": None,
    "access_code_status": None,
    "cost_pence": 263,
    "payment_intent_id": None,
    "payment_status": "pending",
    "payment_error": None,
    "now": "2026-11-26T10:11:00.5+00:00",
}
EMAIL = QueuedEmail(
    dedupe_key=f"receipt:{SESSION}", kind="receipt", recipient="ada@example.com", payload={"a": 1}
)
EMAIL_JSON = {
    "dedupe_key": f"receipt:{SESSION}",
    "kind": "receipt",
    "recipient": "ada@example.com",
    "payload": {"a": 1},
}

Reply = httpx.Response | Exception


class FakePostgrest:
    """Records each request and answers it with the next scripted reply."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


Connect = Callable[..., Awaitable[tuple[SupabaseDatabase, FakePostgrest]]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    opened: list[SupabaseDatabase] = []

    async def open_with(*replies: Reply, key: str = KEY) -> tuple[SupabaseDatabase, FakePostgrest]:
        fake = FakePostgrest(list(replies))
        database = await SupabaseDatabase.connect(PROJECT, key, transport=httpx.MockTransport(fake))
        opened.append(database)
        return database, fake

    yield open_with
    for database in opened:
        await database.close()


def rows(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body)


def no_content() -> httpx.Response:
    return httpx.Response(204)


def postgrest_error(
    status: int, code: str, message: str, details: str | None = None
) -> httpx.Response:
    return httpx.Response(
        status, json={"code": code, "details": details, "hint": None, "message": message}
    )


def assert_request(
    request: httpx.Request,
    method: str,
    path: str,
    params: list[tuple[str, str]] | None = None,
    *,
    body: Any = None,
    prefer: str | None = None,
) -> None:
    assert request.method == method
    assert str(request.url.copy_with(query=None)) == f"{PROJECT}{path}"
    assert request.url.params.multi_items() == (params or [])
    assert request.headers["apikey"] == KEY
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept-profile"] == "public"
    assert request.headers.get("prefer") == prefer
    if body is None:
        assert request.content == b""
    else:
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.content) == body


# Connecting


async def test_connecting_sends_nothing(connect: Connect) -> None:
    _, fake = await connect()
    assert fake.requests == []


def jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "key",
    [
        "sb_publishable_abc123",
        jwt({"iss": "supabase", "ref": "abcd", "role": "anon"}),
        jwt({"iss": "supabase", "ref": "abcd", "role": "authenticated"}),
    ],
)
async def test_the_anon_key_is_refused_at_start(key: str) -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"^SUPABASE_KEY is the project's anon \(publishable\) key; the service needs the "
        r"service-role \(secret\) key, or a DATABASE_URL connection string$",
    ):
        await SupabaseDatabase.connect(PROJECT, key)


async def test_a_service_role_jwt_is_accepted(connect: Connect) -> None:
    key = jwt({"iss": "supabase", "ref": "abcd", "role": "service_role"})
    database, fake = await connect(rows(200, []), key=key)
    await database.ping()
    assert fake.requests[0].headers["apikey"] == key


async def test_an_address_without_a_scheme_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"^SUPABASE_URL 'abcd.supabase.co': Invalid URL$"):
        await SupabaseDatabase.connect("abcd.supabase.co", KEY)


# Pods


async def test_ping_reads_one_pod_id(connect: Connect) -> None:
    database, fake = await connect(rows(200, []))
    assert await database.ping() is None
    [request] = fake.requests
    assert_request(request, "GET", "/rest/v1/pods", [("select", "id"), ("limit", "1")])


async def test_list_pods(connect: Connect) -> None:
    other = {**POD_ROW, "id": 3, "name": "alpha", "price": "0.1000", "in_use": True}
    database, fake = await connect(rows(200, [other, POD_ROW]))
    pods = await database.list_pods()
    assert_request(fake.requests[0], "GET", "/rest/v1/pods", [POD_SELECT, ("order", "name.asc")])
    assert pods == [
        Pod(
            id=3,
            name="alpha",
            address="1 Demo Street",
            price=Decimal("0.1000"),
            currency="gbp",
            in_use=True,
            seam_device_id=None,
        ),
        POD,
    ]
    assert [str(pod.price) for pod in pods] == ["0.1000", "0.2500"]


async def test_list_pods_when_there_are_none(connect: Connect) -> None:
    database, _ = await connect(rows(200, []))
    assert await database.list_pods() == []


async def test_get_pod_by_name(connect: Connect) -> None:
    database, fake = await connect(rows(200, [POD_ROW]), rows(200, []))
    assert await database.get_pod_by_name("pod1") == POD
    assert await database.get_pod_by_name("nope") is None
    assert_request(fake.requests[0], "GET", "/rest/v1/pods", [POD_SELECT, ("name", "eq.pod1")])
    assert_request(fake.requests[1], "GET", "/rest/v1/pods", [POD_SELECT, ("name", "eq.nope")])


async def test_get_pod_by_id(connect: Connect) -> None:
    database, fake = await connect(rows(200, [POD_ROW]), rows(200, []))
    assert await database.get_pod_by_id(7) == POD
    assert await database.get_pod_by_id(999) is None
    assert_request(fake.requests[0], "GET", "/rest/v1/pods", [POD_SELECT, ("id", "eq.7")])
    assert_request(fake.requests[1], "GET", "/rest/v1/pods", [POD_SELECT, ("id", "eq.999")])


async def test_a_price_sent_as_a_json_number_is_refused(connect: Connect) -> None:
    database, _ = await connect(rows(200, [{**POD_ROW, "price": 0.25}]))
    with pytest.raises(TypeError, match="^expected an exact decimal, got float$"):
        await database.list_pods()


NEW_POD = NewPod(
    name="pod1", address="1 Demo Street", price=Decimal("0.25"), currency="gbp", seam_device_id="l1"
)


async def test_insert_pod(connect: Connect) -> None:
    database, fake = await connect(rows(201, [{**POD_ROW, "seam_device_id": "l1"}]))
    created = await database.insert_pod(NEW_POD)
    assert created == Pod(
        id=7,
        name="pod1",
        address="1 Demo Street",
        price=Decimal("0.2500"),
        currency="gbp",
        in_use=False,
        seam_device_id="l1",
    )
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/pods",
        [POD_SELECT],
        prefer="return=representation",
        body={
            "name": "pod1",
            "address": "1 Demo Street",
            "price": "0.25",
            "currency": "gbp",
            "seam_device_id": "l1",
        },
    )


async def test_insert_pod_sends_a_tiny_price_as_plain_digits(connect: Connect) -> None:
    database, fake = await connect(rows(201, [{**POD_ROW, "price": "0.0000"}]))
    await database.insert_pod(
        NewPod(name="pod1", address="", price=Decimal("1E-7"), currency="gbp")
    )
    assert json.loads(fake.requests[0].content)["price"] == "0.0000001"


async def test_a_taken_pod_name_is_pod_name_taken(connect: Connect) -> None:
    database, fake = await connect(
        postgrest_error(
            409,
            "23505",
            'duplicate key value violates unique constraint "pods_name_key"',
            "Key (name)=(pod1) already exists.",
        )
    )
    with pytest.raises(PodNameTaken, match=r"^A pod named 'pod1' already exists\.$") as raised:
        await database.insert_pod(NEW_POD)
    assert raised.value.status_code == 409
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        ("pods_price_not_negative", "The price per minute cannot be negative."),
        ("pods_currency_code", "The currency must be a three-letter code such as gbp."),
        (
            "pods_name_shape",
            "A pod name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
        ),
    ],
)
async def test_a_broken_pod_rule_is_invalid_pod(
    connect: Connect, constraint: str, message: str
) -> None:
    violation = postgrest_error(
        400,
        "23514",
        f'new row for relation "pods" violates check constraint "{constraint}"',
        "Failing row contains (7, pod1, ...).",
    )
    database, _ = await connect(violation, violation)
    with pytest.raises(InvalidPod) as raised:
        await database.insert_pod(NEW_POD)
    assert (raised.value.status_code, raised.value.message) == (422, message)
    with pytest.raises(InvalidPod) as raised:
        await database.update_pod("pod1", PodChanges(price=Decimal("-1")))
    assert raised.value.message == message


async def test_update_pod_sends_only_the_changes(connect: Connect) -> None:
    changed = {**POD_ROW, "price": "0.3000", "seam_device_id": "lock1"}
    database, fake = await connect(rows(200, [changed]))
    updated = await database.update_pod(
        "pod1", PodChanges(price=Decimal("0.30"), seam_device_id="lock1")
    )
    assert updated is not None and (str(updated.price), updated.seam_device_id) == (
        "0.3000",
        "lock1",
    )
    assert_request(
        fake.requests[0],
        "PATCH",
        "/rest/v1/pods",
        [("name", "eq.pod1"), POD_SELECT],
        prefer="return=representation",
        body={"price": "0.30", "seam_device_id": "lock1"},
    )


async def test_update_pod_can_forget_the_lock(connect: Connect) -> None:
    database, fake = await connect(rows(200, [POD_ROW]))
    assert await database.update_pod("pod1", PodChanges(clear_seam_device_id=True)) == POD
    assert json.loads(fake.requests[0].content) == {"seam_device_id": None}


async def test_update_of_an_unknown_pod_is_none(connect: Connect) -> None:
    database, fake = await connect(rows(200, []))
    assert await database.update_pod("nope", PodChanges(address="x")) is None
    assert_request(
        fake.requests[0],
        "PATCH",
        "/rest/v1/pods",
        [("name", "eq.nope"), POD_SELECT],
        prefer="return=representation",
        body={"address": "x"},
    )


async def test_update_with_no_changes_reads_the_pod(connect: Connect) -> None:
    database, fake = await connect(rows(200, [POD_ROW]))
    assert await database.update_pod("pod1", PodChanges()) == POD
    assert_request(fake.requests[0], "GET", "/rest/v1/pods", [POD_SELECT, ("name", "eq.pod1")])


# Sessions

EXPECTED_SESSION = SessionRecord(
    id=SESSION,
    pod_id=7,
    pod_name="pod1",
    pod_address="1 Demo Street",
    seam_device_id=None,
    user_email="ada@example.com",
    start_time=datetime(2026, 11, 26, 10, 0, 0, 123450, tzinfo=UTC),
    end_time=datetime(2026, 11, 26, 10, 10, 30, tzinfo=UTC),
    price_per_minute=Decimal("0.2500"),
    free_minutes=0,
    currency="gbp",
    stripe_customer_id="cus_1",
    stripe_payment_method="pm_1",
    setup_intent_id="seti_1",
    access_code="123456",
    access_code_id=None,
    access_code_status=None,
    cost_pence=263,
    payment_intent_id=None,
    payment_status=PaymentStatus.PENDING,
    payment_error=None,
    now=datetime(2026, 11, 26, 10, 11, 0, 500000, tzinfo=UTC),
)


async def test_get_session_by_id(connect: Connect) -> None:
    database, fake = await connect(rows(200, [SESSION_ROW]), rows(200, []))
    session = await database.get_session_by_id(SESSION)
    assert session == EXPECTED_SESSION
    assert session is not None and str(session.price_per_minute) == "0.2500"
    assert await database.get_session_by_id(UUID(int=1)) is None
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_get_session_with_hold",
        body={"p_session_id": str(SESSION)},
    )
    assert_request(
        fake.requests[1],
        "POST",
        "/rest/v1/rpc/qwip_get_session_with_hold",
        body={"p_session_id": "00000000-0000-0000-0000-000000000001"},
    )


async def test_get_session_by_setup_intent(connect: Connect) -> None:
    open_row = {**SESSION_ROW, "end_time": None, "cost_pence": None, "payment_status": None}
    database, fake = await connect(rows(200, [open_row]), rows(200, []))
    session = await database.get_session_by_setup_intent("seti_1")
    assert session is not None
    assert (session.end_time, session.cost_pence, session.payment_status) == (None, None, None)
    assert await database.get_session_by_setup_intent("seti_none") is None
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_get_session_with_hold",
        body={"p_setup_intent_id": "seti_1"},
    )


async def test_a_timestamp_without_a_zone_is_refused(connect: Connect) -> None:
    database, _ = await connect(rows(200, [{**SESSION_ROW, "now": "2026-11-26T10:11:00"}]))
    with pytest.raises(TypeError, match="^expected a timestamp with a time zone"):
        await database.get_session_by_id(SESSION)


START = StartSessionRequest(
    event_id="evt_1",
    event_type="setup_intent.succeeded",
    session_id=SESSION,
    setup_intent_id="seti_1",
    pod_id=7,
    user_email="ada@example.com",
    customer_id="cus_1",
    payment_method="pm_1",
    access_code="123456",
    free_minutes=5,
    started_email=QueuedEmail(
        dedupe_key=f"access_code:{SESSION}",
        kind="access_code",
        recipient="ada@example.com",
        payload={"access_code": "123456"},
    ),
    unavailable_email=None,
)


async def test_start_session_is_one_rpc(connect: Connect) -> None:
    database, fake = await connect(
        rows(200, {"outcome": "started", "session_id": str(SESSION)}),
        rows(200, {"outcome": "pod_unavailable"}),
        rows(200, {"outcome": "refused_before"}),
    )
    assert await database.start_session(START) == StartOutcome("started", SESSION)
    assert await database.start_session(START) == StartOutcome("pod_unavailable", None)
    # the SetupIntent was decided before (pod unavailable): it never starts a session
    assert await database.start_session(START) == StartOutcome("refused_before", None)
    assert len(fake.requests) == 3
    # the version that records each SetupIntent's outcome (0005), not the old entry point
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_start_session_once",
        body={
            "p_event_id": "evt_1",
            "p_event_type": "setup_intent.succeeded",
            "p_session_id": str(SESSION),
            "p_setup_intent_id": "seti_1",
            "p_pod_id": 7,
            "p_user_email": "ada@example.com",
            "p_customer_id": "cus_1",
            "p_payment_method": "pm_1",
            "p_access_code": "123456",
            "p_free_minutes": 5,
            "p_started_email": {
                "dedupe_key": f"access_code:{SESSION}",
                "kind": "access_code",
                "recipient": "ada@example.com",
                "payload": {"access_code": "123456"},
            },
            "p_unavailable_email": None,
        },
    )


async def test_end_session(connect: Connect) -> None:
    database, fake = await connect(
        rows(200, [{**SESSION_ROW, "charge_claimed": True}]),
        rows(200, [{**SESSION_ROW, "charge_claimed": False}]),
        rows(200, []),
    )
    ended = await database.end_session(SESSION, max_minutes=180, lease_seconds=120)
    assert ended == EndedSession(EXPECTED_SESSION, charge_claimed=True)
    again = await database.end_session(SESSION, max_minutes=180, lease_seconds=120)
    assert again == EndedSession(EXPECTED_SESSION, charge_claimed=False)
    assert await database.end_session(UUID(int=1), max_minutes=180, lease_seconds=120) is None
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_end_session_with_hold",
        body={"p_session_id": str(SESSION), "p_max_minutes": 180, "p_lease_seconds": 120},
    )


async def test_an_rpc_answering_the_wrong_shape_is_an_error(connect: Connect) -> None:
    database, _ = await connect(
        rows(200, True),
        rows(200, [{**SESSION_ROW, "charge_claimed": None}]),
        rows(200, [{"cost_pence": "263", "claimed": True}]),
    )
    with pytest.raises(
        TypeError, match=r"^qwip_end_session_with_hold: expected list from PostgREST"
    ):
        await database.end_session(SESSION, max_minutes=180, lease_seconds=120)
    with pytest.raises(TypeError, match=r"^expected a flag for the charge lease, got None"):
        await database.end_session(SESSION, max_minutes=180, lease_seconds=120)
    with pytest.raises(TypeError, match=r"^expected a cost in pence and a flag"):
        await database.claim_charge(SESSION, cost_pence=263, lease_seconds=120)


async def test_claim_charge(connect: Connect) -> None:
    database, fake = await connect(
        rows(200, [{"cost_pence": 263, "claimed": True}]),
        rows(200, [{"cost_pence": 263, "claimed": False}]),
        rows(200, []),
    )
    assert await database.claim_charge(SESSION, cost_pence=263, lease_seconds=120) == (
        ChargeClaim(cost_pence=263, claimed=True)
    )
    assert await database.claim_charge(SESSION, cost_pence=264, lease_seconds=120) == (
        ChargeClaim(cost_pence=263, claimed=False)
    )
    assert await database.claim_charge(SESSION, cost_pence=263, lease_seconds=120) is None
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_claim_charge",
        body={"p_session_id": str(SESSION), "p_cost_pence": 263, "p_lease_seconds": 120},
    )


async def test_release_charge(connect: Connect) -> None:
    database, fake = await connect(no_content())
    assert await database.release_charge(SESSION) is None
    assert_request(
        fake.requests[0],
        "PATCH",
        "/rest/v1/pod_sessions",
        [("id", f"eq.{SESSION}")],
        prefer="return=minimal",
        body={"charge_locked_until": None},
    )


async def test_record_payment(connect: Connect) -> None:
    database, fake = await connect(rows(200, "recorded"), rows(200, "duplicate"))
    outcome = await database.record_payment(
        SESSION,
        cost_pence=263,
        status=PaymentStatus.FAILED,
        payment_intent_id="pi_1",
        error="Your card was declined.",
        emails=[EMAIL],
    )
    assert outcome == "recorded"
    again = await database.record_payment(
        SESSION,
        cost_pence=263,
        status=PaymentStatus.SUCCEEDED,
        payment_intent_id=None,
        error=None,
        emails=[],
        event_id="evt_2",
        event_type="payment_intent.succeeded",
    )
    assert again == "duplicate"
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_record_payment",
        body={
            "p_session_id": str(SESSION),
            "p_cost_pence": 263,
            "p_status": "failed",
            "p_payment_intent_id": "pi_1",
            "p_error": "Your card was declined.",
            "p_emails": [EMAIL_JSON],
            "p_event_id": None,
            "p_event_type": None,
        },
    )
    assert json.loads(fake.requests[1].content) == {
        "p_session_id": str(SESSION),
        "p_cost_pence": 263,
        "p_status": "succeeded",
        "p_payment_intent_id": None,
        "p_error": None,
        "p_emails": [],
        "p_event_id": "evt_2",
        "p_event_type": "payment_intent.succeeded",
    }


async def test_record_payment_of_a_hold_records_the_settlement(connect: Connect) -> None:
    database, fake = await connect(rows(200, "recorded"))
    outcome = await database.record_payment(
        SESSION,
        cost_pence=263,
        status=PaymentStatus.SUCCEEDED,
        payment_intent_id="pi_hold",
        error=None,
        emails=[],
        captured_pence=263,
        released_pence=1237,
    )
    assert outcome == "recorded"
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_record_settlement",
        body={
            "p_session_id": str(SESSION),
            "p_cost_pence": 263,
            "p_status": "succeeded",
            "p_payment_intent_id": "pi_hold",
            "p_error": None,
            "p_emails": [],
            "p_event_id": None,
            "p_event_type": None,
            "p_captured_pence": 263,
            "p_released_pence": 1237,
        },
    )


async def test_list_unsettled_sessions(connect: Connect) -> None:
    database, fake = await connect(rows(200, [str(SESSION)]), rows(200, []))
    assert await database.list_unsettled_sessions(idle_seconds=60) == [SESSION]
    assert await database.list_unsettled_sessions(idle_seconds=60) == []
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_list_unsettled_sessions",
        body={"p_idle_seconds": 60},
    )


async def test_list_overdue_sessions(connect: Connect) -> None:
    database, fake = await connect(rows(200, [str(SESSION)]))
    assert await database.list_overdue_sessions(max_minutes=180) == [SESSION]
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_list_overdue_sessions",
        body={"p_max_minutes": 180},
    )


# Access codes on smart locks


def json_null() -> httpx.Response:
    """What PostgREST answers when a function returns null."""
    return httpx.Response(200, content=b"null", headers={"content-type": "application/json"})


async def test_list_access_code_work(connect: Connect) -> None:
    database, fake = await connect(rows(200, [str(SESSION)]), rows(200, []))
    assert await database.list_access_code_work(limit=20) == [SESSION]
    assert await database.list_access_code_work(limit=20) == []
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_list_access_code_work",
        body={"p_limit": 20},
    )


async def test_claim_access_code_work(connect: Connect) -> None:
    database, fake = await connect(rows(200, 3), json_null())
    assert await database.claim_access_code_work(SESSION, lease_seconds=120) == 3
    # null: another replica holds the lease, or a retry delay runs
    assert await database.claim_access_code_work(SESSION, lease_seconds=120) is None
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_claim_access_code_work",
        body={"p_session_id": str(SESSION), "p_lease_seconds": 120},
    )


async def test_a_claim_answering_the_wrong_shape_is_an_error(connect: Connect) -> None:
    database, _ = await connect(rows(200, "3"))
    with pytest.raises(
        TypeError, match=r"^qwip_claim_access_code_work: expected int from PostgREST, got '3'$"
    ):
        await database.claim_access_code_work(SESSION, lease_seconds=120)


async def test_retry_access_code_work(connect: Connect) -> None:
    database, fake = await connect(no_content())
    assert await database.retry_access_code_work(SESSION, retry_in_seconds=2.5) is None
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_retry_access_code_work",
        body={"p_session_id": str(SESSION), "p_retry_in_seconds": 2.5},
    )


async def test_record_access_code(connect: Connect) -> None:
    database, fake = await connect(rows(200, True), rows(200, False))
    assert await database.record_access_code(SESSION, access_code_id="ac_1", status="setting")
    assert not await database.record_access_code(SESSION, access_code_id="ac_2", status="unset")
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_record_access_code",
        body={"p_session_id": str(SESSION), "p_access_code_id": "ac_1", "p_status": "setting"},
    )


async def test_update_access_code_status(connect: Connect) -> None:
    database, fake = await connect(rows(200, True), rows(200, False))
    assert await database.update_access_code_status(SESSION, access_code_id="ac_1", status="set")
    assert not await database.update_access_code_status(
        SESSION, access_code_id="ac_1", status="removed"
    )
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_update_access_code_status",
        body={"p_session_id": str(SESSION), "p_access_code_id": "ac_1", "p_status": "set"},
    )


async def test_fail_access_code(connect: Connect) -> None:
    database, fake = await connect(rows(200, True), rows(200, False))
    assert await database.fail_access_code(SESSION) is True
    assert await database.fail_access_code(SESSION) is False
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_fail_access_code",
        body={"p_session_id": str(SESSION)},
    )


# Backup codes and reminders


async def test_list_backup_code_work(connect: Connect) -> None:
    database, fake = await connect(rows(200, [str(SESSION)]))
    assert await database.list_backup_code_work(after_seconds=120, limit=20) == [SESSION]
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_list_backup_code_work",
        body={"p_after_seconds": 120, "p_limit": 20},
    )


async def test_claim_backup_code_work(connect: Connect) -> None:
    database, fake = await connect(rows(200, 1), json_null())
    assert await database.claim_backup_code_work(SESSION, lease_seconds=30) == 1
    # null: another replica asks Seam now, or the session has a backup, ended or failed
    assert await database.claim_backup_code_work(SESSION, lease_seconds=30) is None
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_claim_backup_code_work",
        body={"p_session_id": str(SESSION), "p_lease_seconds": 30},
    )


async def test_record_backup_code(connect: Connect) -> None:
    database, fake = await connect(rows(200, "recorded"), rows(200, "taken"))
    backup = BackupCode(access_code_id="ac_backup_1", code="4821")
    assert await database.record_backup_code(SESSION, backup, emails=[EMAIL]) == "recorded"
    assert await database.record_backup_code(SESSION, backup, emails=[]) == "taken"
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_record_backup_code",
        body={
            "p_session_id": str(SESSION),
            "p_backup_access_code_id": "ac_backup_1",
            "p_backup_access_code": "4821",
            "p_emails": [EMAIL_JSON],
        },
    )


async def test_fail_access_code_without_backup(connect: Connect) -> None:
    database, fake = await connect(rows(200, True), rows(200, False))
    assert await database.fail_access_code_without_backup(SESSION) is True
    assert await database.fail_access_code_without_backup(SESSION) is False
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_fail_access_code_without_backup",
        body={"p_session_id": str(SESSION)},
    )


async def test_get_backup_code(connect: Connect) -> None:
    database, fake = await connect(
        rows(200, [{"backup_access_code_id": "ac_backup_1", "backup_access_code": "4821"}]),
        rows(200, []),
    )
    assert await database.get_backup_code(SESSION) == BackupCode(
        access_code_id="ac_backup_1", code="4821"
    )
    assert await database.get_backup_code(SESSION) is None
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_get_backup_code",
        body={"p_session_id": str(SESSION)},
    )


async def test_list_reminders_due(connect: Connect) -> None:
    database, fake = await connect(rows(200, [str(SESSION)]))
    assert await database.list_reminders_due(max_minutes=180, before_minutes=15) == [SESSION]
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_list_reminders_due",
        body={"p_max_minutes": 180, "p_before_minutes": 15},
    )


async def test_record_reminder(connect: Connect) -> None:
    database, fake = await connect(rows(200, True), rows(200, False))
    assert await database.record_reminder(SESSION, emails=[EMAIL]) is True
    assert await database.record_reminder(SESSION, emails=[EMAIL]) is False
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_record_reminder",
        body={"p_session_id": str(SESSION), "p_emails": [EMAIL_JSON]},
    )


@pytest.mark.parametrize(
    ("function", "operation"),
    [
        (
            "qwip_record_access_code",
            lambda db: db.record_access_code(SESSION, access_code_id="ac_1", status="set"),
        ),
        (
            "qwip_update_access_code_status",
            lambda db: db.update_access_code_status(SESSION, access_code_id="ac_1", status="set"),
        ),
        ("qwip_fail_access_code", lambda db: db.fail_access_code(SESSION)),
    ],
    ids=["record_access_code", "update_access_code_status", "fail_access_code"],
)
async def test_a_lock_rule_answering_no_boolean_is_an_error(
    connect: Connect,
    function: str,
    operation: Callable[[SupabaseDatabase], Awaitable[object]],
) -> None:
    database, _ = await connect(json_null())
    with pytest.raises(TypeError) as raised:
        await operation(database)
    assert str(raised.value) == f"{function}: expected bool from PostgREST, got None"


# Stripe events


async def test_is_event_processed(connect: Connect) -> None:
    database, fake = await connect(rows(200, [{"id": "evt_1"}]), rows(200, []))
    assert await database.is_event_processed("evt_1") is True
    assert await database.is_event_processed("evt_2") is False
    assert_request(
        fake.requests[0], "GET", "/rest/v1/stripe_events", [("select", "id"), ("id", "eq.evt_1")]
    )


async def test_record_event(connect: Connect) -> None:
    database, fake = await connect(rows(200, True), rows(200, False))
    assert await database.record_event("evt_1", "setup_intent.succeeded", [EMAIL]) is True
    assert await database.record_event("evt_1", "setup_intent.succeeded") is False
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_record_event",
        body={
            "p_event_id": "evt_1",
            "p_event_type": "setup_intent.succeeded",
            "p_emails": [EMAIL_JSON],
        },
    )
    assert json.loads(fake.requests[1].content)["p_emails"] == []


# Seam's events, the locks' health and pods out of service

LOCK_EVENT_AT = datetime(2026, 11, 30, 9, 0, 5, tzinfo=UTC)
LOCK_OFFLINE = LockHealth(device_id="lock_1", occurred_at=LOCK_EVENT_AT, online=False)


async def test_is_seam_event_processed(connect: Connect) -> None:
    database, fake = await connect(rows(200, True))
    assert await database.is_seam_event_processed("ev_1") is True
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_seam_event_seen",
        body={"p_event_id": "ev_1"},
    )


async def test_record_seam_event(connect: Connect) -> None:
    database, fake = await connect(rows(200, True), rows(200, False))
    assert await database.record_seam_event("ev_1", "access_code.failed_to_set_on_device")
    assert not await database.record_seam_event("ev_1", "access_code.failed_to_set_on_device")
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_record_seam_event",
        body={"p_event_id": "ev_1", "p_event_type": "access_code.failed_to_set_on_device"},
    )


async def test_record_code_set(connect: Connect) -> None:
    database, fake = await connect(rows(200, "recorded"))
    outcome = await database.record_code_set(
        "ev_1", "access_code.set_on_device", access_code_id="ac_1"
    )
    assert outcome == "recorded"
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_seam_code_set",
        body={
            "p_event_id": "ev_1",
            "p_event_type": "access_code.set_on_device",
            "p_access_code_id": "ac_1",
        },
    )


async def test_get_session_of_access_code(connect: Connect) -> None:
    database, fake = await connect(rows(200, str(SESSION)), json_null())
    assert await database.get_session_of_access_code("ac_1") == SESSION
    assert await database.get_session_of_access_code("ac_1") is None
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_session_of_access_code",
        body={"p_access_code_id": "ac_1"},
    )


async def test_record_unlock(connect: Connect) -> None:
    database, fake = await connect(rows(200, "recorded"))
    outcome = await database.record_unlock(
        "ev_1", "lock.unlocked", access_code_id="ac_1", occurred_at=LOCK_EVENT_AT
    )
    assert outcome == "recorded"
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_seam_lock_unlocked",
        body={
            "p_event_id": "ev_1",
            "p_event_type": "lock.unlocked",
            "p_access_code_id": "ac_1",
            "p_occurred_at": "2026-11-30T09:00:05+00:00",
        },
    )


async def test_get_session_unlocks(connect: Connect) -> None:
    database, fake = await connect(
        rows(200, [{"first_unlocked_at": "2026-11-30T09:00:05+00:00", "unlock_count": 2}]),
        rows(200, []),
    )
    assert await database.get_session_unlocks(SESSION) == SessionUnlocks(
        first_unlocked_at=LOCK_EVENT_AT, unlock_count=2
    )
    assert await database.get_session_unlocks(SESSION) == SessionUnlocks()
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_get_session_unlocks",
        body={"p_session_id": str(SESSION)},
    )


async def test_record_lock_health(connect: Connect) -> None:
    database, fake = await connect(rows(200, "alerted"))
    health = LockHealth(
        device_id="lock_1",
        occurred_at=LOCK_EVENT_AT,
        battery_low=True,
        battery_level=Decimal("0.120"),
    )
    outcome = await database.record_lock_health(
        health, alert=EMAIL, event_id="ev_1", event_type="device.low_battery"
    )
    assert outcome == "alerted"
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_record_lock_health",
        body={
            "p_event_id": "ev_1",
            "p_event_type": "device.low_battery",
            "p_device_id": "lock_1",
            "p_occurred_at": "2026-11-30T09:00:05+00:00",
            "p_online": None,
            "p_battery_level": "0.120",
            "p_battery_low": True,
            "p_tampered": False,
            "p_alert": EMAIL_JSON,
        },
    )


async def test_set_pod_disabled(connect: Connect) -> None:
    database, fake = await connect(rows(200, True), rows(200, False))
    assert await database.set_pod_disabled("pod1", reason="cleaning") is True
    assert await database.set_pod_disabled("pod9", reason=None) is False
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_set_pod_disabled",
        body={"p_name": "pod1", "p_reason": "cleaning"},
    )
    assert json.loads(fake.requests[1].content) == {"p_name": "pod9", "p_reason": None}


# Booking abuse limits


async def test_take_booking_slot(connect: Connect) -> None:
    database, fake = await connect(rows(200, 0), rows(200, 42))
    limits = {"ip:203.0.113.5": 10, "email:abc": 5}
    assert await database.take_booking_slot(limits, window_seconds=600) == 0
    # full: the seconds until a slot frees
    assert await database.take_booking_slot(limits, window_seconds=600) == 42
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_take_booking_slot",
        body={"p_limits": {"ip:203.0.113.5": 10, "email:abc": 5}, "p_window_seconds": 600},
    )


# Card holds


async def test_begin_hold(connect: Connect) -> None:
    hold = {
        "session_id": str(SESSION),
        "amount_pence": 1500,
        "currency": "gbp",
        "payment_intent_id": None,
        "state": "placing",
        "error": None,
    }
    database, fake = await connect(rows(200, hold))
    found = await database.begin_hold(
        "seti_1", session_id=SESSION, pod_id=7, amount_pence=1500, currency="gbp"
    )
    assert (found.session_id, found.amount_pence, found.state) == (SESSION, 1500, "placing")
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_begin_hold",
        body={
            "p_setup_intent_id": "seti_1",
            "p_session_id": str(SESSION),
            "p_pod_id": 7,
            "p_amount_pence": 1500,
            "p_currency": "gbp",
        },
    )


async def test_record_hold(connect: Connect) -> None:
    database, fake = await connect(rows(200, "held"))
    assert await database.record_hold("seti_1", payment_intent_id="pi_1", state="held") == "held"
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_record_hold",
        body={
            "p_setup_intent_id": "seti_1",
            "p_payment_intent_id": "pi_1",
            "p_state": "held",
            "p_error": None,
        },
    )


async def test_claim_abandoned_holds(connect: Connect) -> None:
    claimed = {
        "setup_intent_id": "seti_1",
        "session_id": str(SESSION),
        "pod_id": 7,
        "amount_pence": 1500,
        "currency": "gbp",
        "payment_intent_id": "pi_1",
    }
    database, fake = await connect(rows(200, [claimed]))
    [hold] = await database.claim_abandoned_holds(idle_seconds=900)
    assert (hold.setup_intent_id, hold.payment_intent_id, hold.state) == (
        "seti_1",
        "pi_1",
        "releasing",
    )
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_claim_abandoned_holds",
        body={"p_idle_seconds": 900},
    )


# Owed sessions


async def test_begin_recovery(connect: Connect) -> None:
    database, fake = await connect(rows(200, {"attempt": 2, "payment_intent_id": None}))
    found = await database.begin_recovery(SESSION, after_attempt=1)
    assert found == RecoveryAttempt(attempt=2, payment_intent_id=None)
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_begin_recovery",
        body={"p_session_id": str(SESSION), "p_after_attempt": 1},
    )


async def test_begin_recovery_of_an_unknown_session_is_none(connect: Connect) -> None:
    database, fake = await connect(rows(200, None))
    assert await database.begin_recovery(SESSION) is None
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_begin_recovery",
        body={"p_session_id": str(SESSION), "p_after_attempt": None},
    )


async def test_record_recovery(connect: Connect) -> None:
    database, fake = await connect(no_content())
    assert await database.record_recovery(SESSION, attempt=2, payment_intent_id="pi_1") is None
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_record_recovery",
        body={"p_session_id": str(SESSION), "p_attempt": 2, "p_payment_intent_id": "pi_1"},
    )


async def test_record_card_fingerprint(connect: Connect) -> None:
    database, fake = await connect(no_content())
    assert await database.record_card_fingerprint(SESSION, fingerprint="fp_1") is None
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_record_card_fingerprint",
        body={"p_session_id": str(SESSION), "p_fingerprint": "fp_1"},
    )


async def test_find_unpaid_session(connect: Connect) -> None:
    database, fake = await connect(rows(200, str(SESSION)))
    assert await database.find_unpaid_session(email="Ada@Example.com", fingerprint="fp_1") == (
        SESSION
    )
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_find_unpaid_session",
        body={"p_email": "Ada@Example.com", "p_fingerprint": "fp_1"},
    )


async def test_find_unpaid_session_when_nothing_is_owed(connect: Connect) -> None:
    database, _ = await connect(rows(200, None))
    assert await database.find_unpaid_session(email="ada@example.com", fingerprint=None) is None


# Refunds and disputes


async def test_get_session_refunds(connect: Connect) -> None:
    money = {
        "paid_pence": 263,
        "reserved_pence": 100,
        "refunded_pence": 100,
        "disputed_at": None,
        "unfinished": [
            {
                "id": 4,
                "request_id": str(SESSION),
                "payment_intent_id": "pi_1",
                "amount_pence": 50,
                "reason": None,
            }
        ],
        "access_code_emailed_at": "2026-11-26T15:05:02.5+00:00",
    }
    database, fake = await connect(rows(200, money))
    found = await database.get_session_refunds(SESSION)
    assert found is not None
    assert (found.paid_pence, found.refundable_pence, found.unfinished[0].id) == (263, 163, 4)
    assert found.access_code_emailed_at == datetime(2026, 11, 26, 15, 5, 2, 500000, tzinfo=UTC)
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_session_refunds",
        body={"p_session_id": str(SESSION)},
    )


async def test_get_session_refunds_of_an_unknown_session(connect: Connect) -> None:
    database, _ = await connect(json_null())
    assert await database.get_session_refunds(SESSION) is None


async def test_reserve_refund(connect: Connect) -> None:
    part = {
        "id": 4,
        "request_id": str(SESSION),
        "payment_intent_id": "pi_1",
        "amount_pence": 100,
        "reason": "dirty",
    }
    database, fake = await connect(
        rows(200, {"outcome": "reserved", "refundable_pence": 263, "parts": [part]})
    )
    reserved = await database.reserve_refund(
        SESSION, request_id=SESSION, amount_pence=100, reason="dirty"
    )
    assert (reserved.outcome, reserved.parts[0].payment_intent_id) == ("reserved", "pi_1")
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_reserve_refund",
        body={
            "p_session_id": str(SESSION),
            "p_request_id": str(SESSION),
            "p_amount_pence": 100,
            "p_reason": "dirty",
        },
    )


async def test_record_refund(connect: Connect) -> None:
    database, fake = await connect(rows(200, "succeeded"))
    state = await database.record_refund(
        4, stripe_refund_id="re_1", state="succeeded", emails=[EMAIL]
    )
    assert state == "succeeded"
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_record_refund",
        body={
            "p_refund_id": 4,
            "p_stripe_refund_id": "re_1",
            "p_state": "succeeded",
            "p_emails": [EMAIL.as_json()],
        },
    )


async def test_sync_refunds(connect: Connect) -> None:
    from svc.models.refunds import StripeRefund

    database, fake = await connect(rows(200, "recorded"))
    refund = StripeRefund(id="re_1", amount_pence=100, state="succeeded", qwip_refund_id=None)
    outcome = await database.sync_refunds(
        SESSION,
        payment_intent_id="pi_1",
        refunds=[refund],
        event_id="evt_1",
        event_type="charge.refunded",
    )
    assert outcome == "recorded"
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_sync_refunds",
        body={
            "p_session_id": str(SESSION),
            "p_payment_intent_id": "pi_1",
            "p_refunds": [
                {"id": "re_1", "amount": 100, "state": "succeeded", "qwip_refund_id": None}
            ],
            "p_event_id": "evt_1",
            "p_event_type": "charge.refunded",
            "p_emails": [],
        },
    )


async def test_record_dispute(connect: Connect) -> None:
    database, fake = await connect(rows(200, "recorded"))
    outcome = await database.record_dispute(
        SESSION, dispute_id="dp_1", event_id="evt_1", event_type="charge.dispute.created"
    )
    assert outcome == "recorded"
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_record_dispute",
        body={
            "p_session_id": str(SESSION),
            "p_dispute_id": "dp_1",
            "p_event_id": "evt_1",
            "p_event_type": "charge.dispute.created",
            "p_emails": [],
        },
    )


# E-mail outbox


async def test_queue_emails(connect: Connect) -> None:
    database, fake = await connect(no_content())
    assert await database.queue_emails([EMAIL]) is None
    assert await database.queue_emails([]) is None
    [request] = fake.requests
    assert_request(
        request, "POST", "/rest/v1/rpc/qwip_queue_emails", body={"p_emails": [EMAIL_JSON]}
    )


async def test_claim_emails(connect: Connect) -> None:
    outbox_row = {
        "id": 5,
        "dedupe_key": f"receipt:{SESSION}",
        "kind": "receipt",
        "recipient": "ada@example.com",
        "payload": {"cost_pence": 263, "pod_name": "pod1"},
        "created_at": "2026-11-26T10:11:00+00:00",
        "next_attempt_at": "2026-11-26T10:11:00+00:00",
        "locked_until": "2026-11-26T10:12:00+00:00",
        "attempts": 1,
        "last_error": None,
        "sent_at": None,
    }
    database, fake = await connect(rows(200, [outbox_row]), rows(200, []))
    assert await database.claim_emails(limit=10, lease_seconds=60) == [
        OutboxEmail(
            id=5,
            dedupe_key=f"receipt:{SESSION}",
            kind="receipt",
            recipient="ada@example.com",
            payload={"cost_pence": 263, "pod_name": "pod1"},
            attempts=1,
        )
    ]
    assert await database.claim_emails(limit=10, lease_seconds=60) == []
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_claim_emails",
        body={"p_limit": 10, "p_lease_seconds": 60},
    )


async def test_mark_emails_sent(connect: Connect) -> None:
    database, fake = await connect(no_content())
    assert await database.mark_emails_sent([5, 6]) is None
    assert_request(
        fake.requests[0],
        "PATCH",
        "/rest/v1/email_outbox",
        [("id", "in.(5,6)")],
        prefer="return=minimal",
        body={"sent_at": "now", "locked_until": None, "last_error": None},
    )


async def test_mark_email_failed(connect: Connect) -> None:
    database, fake = await connect(no_content())
    assert await database.mark_email_failed(5, retry_in_seconds=10, error="421 busy") is None
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_postpone_email",
        body={"p_email_id": 5, "p_retry_in_seconds": 10, "p_error": "421 busy"},
    )


async def test_dead_letter_email(connect: Connect) -> None:
    notice = QueuedEmail(
        dedupe_key="dead_letter:5",
        kind="operator_alert",
        recipient="ops@example.com",
        payload={"subject": "s", "text": "t"},
    )
    database, fake = await connect(rows(200, True), rows(200, False))
    assert await database.dead_letter_email(5, error="550 no such user", notice=notice) is True
    assert await database.dead_letter_email(5, error="550 no such user", notice=None) is False
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_dead_letter_email",
        body={
            "p_email_id": 5,
            "p_error": "550 no such user",
            "p_notice": {
                "dedupe_key": "dead_letter:5",
                "kind": "operator_alert",
                "recipient": "ops@example.com",
                "payload": {"subject": "s", "text": "t"},
            },
        },
    )
    assert_request(
        fake.requests[1],
        "POST",
        "/rest/v1/rpc/qwip_dead_letter_email",
        body={"p_email_id": 5, "p_error": "550 no such user", "p_notice": None},
    )


async def test_a_recipient_that_is_not_an_address_is_never_sent_to_the_database(
    connect: Connect,
) -> None:
    poisoned = QueuedEmail(
        dedupe_key="receipt:x",
        kind="receipt",
        recipient="y@example.com\nBcc: z@evil.example",
        payload={"a": 1},
    )
    database, fake = await connect(no_content())
    assert await database.queue_emails([poisoned, EMAIL]) is None
    assert_request(
        fake.requests[0], "POST", "/rest/v1/rpc/qwip_queue_emails", body={"p_emails": [EMAIL_JSON]}
    )


# Failures: every operation answers the same way to the same trouble.

Operation = Callable[[SupabaseDatabase], Awaitable[object]]

OPERATIONS: dict[str, Operation] = {
    "ping": lambda db: db.ping(),
    "list_pods": lambda db: db.list_pods(),
    "get_pod_by_name": lambda db: db.get_pod_by_name("pod1"),
    "get_pod_by_id": lambda db: db.get_pod_by_id(7),
    "insert_pod": lambda db: db.insert_pod(NEW_POD),
    "update_pod": lambda db: db.update_pod("pod1", PodChanges(address="x")),
    "get_session_by_id": lambda db: db.get_session_by_id(SESSION),
    "get_session_by_setup_intent": lambda db: db.get_session_by_setup_intent("seti_1"),
    "start_session": lambda db: db.start_session(START),
    "end_session": lambda db: db.end_session(SESSION, max_minutes=180, lease_seconds=120),
    "claim_charge": lambda db: db.claim_charge(SESSION, cost_pence=263, lease_seconds=120),
    "release_charge": lambda db: db.release_charge(SESSION),
    "record_payment": lambda db: db.record_payment(
        SESSION,
        cost_pence=263,
        status=PaymentStatus.SUCCEEDED,
        payment_intent_id=None,
        error=None,
        emails=[],
    ),
    "list_unsettled_sessions": lambda db: db.list_unsettled_sessions(idle_seconds=60),
    "list_overdue_sessions": lambda db: db.list_overdue_sessions(max_minutes=180),
    "list_access_code_work": lambda db: db.list_access_code_work(limit=20),
    "claim_access_code_work": lambda db: db.claim_access_code_work(SESSION, lease_seconds=120),
    "retry_access_code_work": lambda db: db.retry_access_code_work(SESSION, retry_in_seconds=1.0),
    "record_access_code": lambda db: db.record_access_code(
        SESSION, access_code_id="ac_1", status="set"
    ),
    "update_access_code_status": lambda db: db.update_access_code_status(
        SESSION, access_code_id="ac_1", status="set"
    ),
    "fail_access_code": lambda db: db.fail_access_code(SESSION),
    "list_backup_code_work": lambda db: db.list_backup_code_work(after_seconds=120, limit=20),
    "claim_backup_code_work": lambda db: db.claim_backup_code_work(SESSION, lease_seconds=30),
    "record_backup_code": lambda db: db.record_backup_code(
        SESSION, BackupCode(access_code_id="ac_backup_1", code="4821"), emails=[]
    ),
    "fail_access_code_without_backup": lambda db: db.fail_access_code_without_backup(SESSION),
    "get_backup_code": lambda db: db.get_backup_code(SESSION),
    "list_reminders_due": lambda db: db.list_reminders_due(max_minutes=180, before_minutes=15),
    "record_reminder": lambda db: db.record_reminder(SESSION, emails=[]),
    "is_event_processed": lambda db: db.is_event_processed("evt_1"),
    "record_event": lambda db: db.record_event("evt_1", "x"),
    "queue_emails": lambda db: db.queue_emails([EMAIL]),
    "claim_emails": lambda db: db.claim_emails(limit=10, lease_seconds=60),
    "mark_emails_sent": lambda db: db.mark_emails_sent([5]),
    "mark_email_failed": lambda db: db.mark_email_failed(5, retry_in_seconds=1, error="x"),
    "dead_letter_email": lambda db: db.dead_letter_email(5, error="x", notice=None),
    "take_booking_slot": lambda db: db.take_booking_slot({"ip:x": 1}, window_seconds=60),
    "begin_hold": lambda db: db.begin_hold(
        "seti_1", session_id=SESSION, pod_id=1, amount_pence=1500, currency="gbp"
    ),
    "record_hold": lambda db: db.record_hold("seti_1", payment_intent_id="pi_1", state="held"),
    "claim_abandoned_holds": lambda db: db.claim_abandoned_holds(idle_seconds=900),
    "begin_recovery": lambda db: db.begin_recovery(SESSION, after_attempt=0),
    "record_recovery": lambda db: db.record_recovery(SESSION, attempt=1, payment_intent_id="pi_1"),
    "record_card_fingerprint": lambda db: db.record_card_fingerprint(SESSION, fingerprint="f"),
    "find_unpaid_session": lambda db: db.find_unpaid_session(email="a@b.co", fingerprint=None),
    "get_session_refunds": lambda db: db.get_session_refunds(SESSION),
    "reserve_refund": lambda db: db.reserve_refund(
        SESSION, request_id=SESSION, amount_pence=None, reason=None
    ),
    "record_refund": lambda db: db.record_refund(1, stripe_refund_id="re_1", state="succeeded"),
    "sync_refunds": lambda db: db.sync_refunds(
        SESSION, payment_intent_id="pi_1", refunds=[], event_id="evt_1", event_type="x"
    ),
    "record_dispute": lambda db: db.record_dispute(
        SESSION, dispute_id="dp_1", event_id="evt_1", event_type="x"
    ),
    # The operator's queries (svc/database_accessor/operator.py)
    "list_session_details": lambda db: db.list_session_details(open_only=True),
    "get_session_details": lambda db: db.get_session_details(SESSION),
    "list_session_emails": lambda db: db.list_session_emails(SESSION),
    "waive_charge": lambda db: db.waive_charge(SESSION, reason="x"),
    "list_session_refunds": lambda db: db.list_session_refunds(SESSION),
    "refunds_by_day": lambda db: db.refunds_by_day(
        since=datetime(2026, 11, 1, tzinfo=UTC), timezone="Europe/London"
    ),
    "money_by_day": lambda db: db.money_by_day(
        since=datetime(2026, 11, 1, tzinfo=UTC), timezone="Europe/London"
    ),
    "forget_attempts": lambda db: db.forget_attempts("admin_sign_in:ip:x"),
    "is_seam_event_processed": lambda db: db.is_seam_event_processed("ev_1"),
    "record_seam_event": lambda db: db.record_seam_event("ev_1", "x"),
    "record_code_set": lambda db: db.record_code_set("ev_1", "x", access_code_id="ac_1"),
    "get_session_of_access_code": lambda db: db.get_session_of_access_code("ac_1"),
    "record_unlock": lambda db: db.record_unlock(
        "ev_1", "x", access_code_id="ac_1", occurred_at=LOCK_EVENT_AT
    ),
    "get_session_unlocks": lambda db: db.get_session_unlocks(SESSION),
    "record_lock_health": lambda db: db.record_lock_health(LOCK_OFFLINE, alert=None),
    "set_pod_disabled": lambda db: db.set_pod_disabled("pod1", reason=None),
    "get_service_gauges": lambda db: db.get_service_gauges(),
}

TROUBLE: dict[str, Reply] = {
    "503 from the gateway, not JSON": httpx.Response(
        503, text="upstream connect error or disconnect/reset before headers"
    ),
    "502 html": httpx.Response(502, html="<html><body>Bad gateway</body></html>"),
    "500 from PostgREST": httpx.Response(
        500, json={"code": "57014", "details": None, "hint": None, "message": "canceling statement"}
    ),
    "503 database down": httpx.Response(
        503,
        json={"code": "PGRST000", "details": None, "hint": None, "message": "no connection"},
    ),
    "read timeout": httpx.ReadTimeout("timed out"),
    "connect timeout": httpx.ConnectTimeout("timed out"),
    "refused connection": httpx.ConnectError("[Errno 111] Connection refused"),
    "dropped connection": httpx.RemoteProtocolError("Server disconnected without a response"),
}


@pytest.mark.parametrize("trouble", TROUBLE.values(), ids=TROUBLE.keys())
@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
async def test_trouble_reaching_postgrest_is_database_unavailable(
    connect: Connect, operation: Operation, trouble: Reply
) -> None:
    database, fake = await connect(trouble)
    with pytest.raises(DatabaseUnavailable) as raised:
        await operation(database)
    assert (raised.value.status_code, raised.value.message) == (
        503,
        "The database cannot be reached right now; please try again shortly.",
    )
    # once: the backend does not retry and sleep, its callers retry
    assert len(fake.requests) == 1


def test_every_operation_of_the_protocol_is_covered() -> None:
    from svc.database_accessor import Database

    # Database and the classes it is made of (the operator's queries and the Seam calls are
    # mixins).
    names = {name for cls in Database.__mro__ if cls is not object for name in vars(cls)}
    protocol = {name for name in names if not name.startswith("_") and name not in ("close",)}
    assert protocol == set(OPERATIONS)


@pytest.mark.parametrize(
    "refusal",
    [
        httpx.Response(401, json={"message": "Invalid API key", "hint": "Double check the key"}),
        httpx.Response(
            403,
            json={
                "code": "42501",
                "details": None,
                "hint": None,
                "message": "permission denied for function qwip_claim_charge",
            },
        ),
    ],
    ids=["401 invalid key", "403 permission denied"],
)
async def test_a_refused_key_is_unavailable_and_logged_for_the_operator(
    connect: Connect, refusal: httpx.Response, caplog: pytest.LogCaptureFixture
) -> None:
    database, _ = await connect(refusal)
    with (
        caplog.at_level(logging.ERROR, logger="svc.database_accessor"),
        pytest.raises(DatabaseUnavailable),
    ):
        await database.claim_charge(SESSION, cost_pence=263, lease_seconds=120)
    code = refusal.json().get("code")
    assert [record.getMessage() for record in caplog.records] == [
        f"database.key_refused status={refusal.status_code} code={code}: SUPABASE_KEY must be "
        "the project's service-role key and the migration must be applied"
    ]


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        (
            postgrest_error(
                404,
                "PGRST202",
                "Could not find the function public.qwip_claim_charge(p_cost_pence, "
                "p_lease_seconds, p_session_id) in the schema cache",
            ),
            "Could not find the function public.qwip_claim_charge(p_cost_pence, "
            "p_lease_seconds, p_session_id) in the schema cache",
        ),
        (
            postgrest_error(404, "42P01", 'relation "public.pod_sessions" does not exist'),
            'relation "public.pod_sessions" does not exist',
        ),
    ],
    ids=["function not in the schema cache", "no such table"],
)
async def test_a_project_without_the_migration_is_unavailable_and_says_so(
    connect: Connect, missing: httpx.Response, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    database, _ = await connect(missing)
    with (
        caplog.at_level(logging.ERROR, logger="svc.database_accessor"),
        pytest.raises(DatabaseUnavailable),
    ):
        await database.claim_charge(SESSION, cost_pence=263, lease_seconds=120)
    code = json.loads(missing.content)["code"]
    assert [record.getMessage() for record in caplog.records] == [
        f"database.schema_missing code={code} message={message}: apply "
        "supabase/migrations/*.sql to the project, in order"
    ]


async def test_a_query_postgrest_refuses_is_not_hidden_as_unavailable(connect: Connect) -> None:
    database, _ = await connect(
        postgrest_error(400, "22P02", 'invalid input syntax for type uuid: "x"')
    )
    with pytest.raises(APIError) as raised:
        await database.claim_charge(SESSION, cost_pence=263, lease_seconds=120)
    assert (raised.value.code, raised.value.message) == (
        "22P02",
        'invalid input syntax for type uuid: "x"',
    )


async def test_get_service_gauges(connect: Connect) -> None:
    answer = {"open_sessions": 2, "owed_pence": 526, "emails_waiting": 3, "emails_dead": 1}
    database, fake = await connect(rows(200, [answer]))
    assert await database.get_service_gauges() == ServiceGauges(
        open_sessions=2, owed_pence=526, emails_waiting=3, emails_dead=1
    )
    assert_request(fake.requests[0], "POST", "/rest/v1/rpc/qwip_service_gauges", body={})


async def test_after_close_nothing_is_sent(connect: Connect) -> None:
    database, fake = await connect()
    await database.close()
    with pytest.raises(RuntimeError, match="client has been closed"):
        await database.ping()
    assert fake.requests == []


# The operator's queries


DETAILS_ROW = {
    **SESSION_ROW,
    "hold_payment_intent_id": None,
    "hold_pence": None,
    "captured_pence": None,
    "released_pence": None,
    "code_set_at": "2026-11-26T10:00:20+00:00",
    "settled_at": None,
    "no_charge_reason": None,
    "refunded_pence": 0,
    "disputed_at": None,
    "dispute_id": None,
    "reminded_at": None,
    "backup_access_code_id": None,
    "backup_code_at": None,
    "first_unlocked_at": "2026-11-26T10:01:00+00:00",
    "unlock_count": 2,
}


async def test_list_session_details(connect: Connect) -> None:
    database, fake = await connect(rows(200, [DETAILS_ROW]), rows(200, []))
    since = datetime(2026, 11, 1, tzinfo=UTC)
    [found] = await database.list_session_details(
        open_only=True, owed_only=False, since=since, email="ada@example.com"
    )
    assert found.session.id == SESSION
    assert found.code_set_at == datetime(2026, 11, 26, 10, 0, 20, tzinfo=UTC)
    assert (found.settled_at, found.no_charge_reason) == (None, None)
    assert (found.first_unlocked_at, found.unlock_count) == (
        datetime(2026, 11, 26, 10, 1, tzinfo=UTC),
        2,
    )
    assert await database.get_session_details(SESSION) is None
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_list_sessions",
        body={
            "p_open": True,
            "p_owed": False,
            "p_refunded": False,
            "p_disputed": False,
            "p_since": "2026-11-01T00:00:00+00:00",
            "p_email": "ada@example.com",
            "p_session_id": None,
            "p_limit": 500,
        },
    )
    assert_request(
        fake.requests[1],
        "POST",
        "/rest/v1/rpc/qwip_list_sessions",
        body={
            "p_open": False,
            "p_owed": False,
            "p_refunded": False,
            "p_disputed": False,
            "p_since": None,
            "p_email": None,
            "p_session_id": str(SESSION),
            "p_limit": 1,
        },
    )


async def test_list_session_emails(connect: Connect) -> None:
    email = {
        "kind": "receipt",
        "recipient": "ada@example.com",
        "created_at": "2026-11-26T10:10:31+00:00",
        "sent_at": None,
        "dead_at": "2026-11-26T11:00:00+00:00",
        "attempts": 8,
        "last_error": "550",
    }
    database, fake = await connect(rows(200, [email]))
    [found] = await database.list_session_emails(SESSION)
    assert (found.kind, found.sent_at, found.attempts, found.last_error) == (
        "receipt",
        None,
        8,
        "550",
    )
    assert found.dead_at == datetime(2026, 11, 26, 11, 0, tzinfo=UTC)
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_list_session_emails",
        body={"p_session_id": str(SESSION)},
    )


async def test_waive_charge(connect: Connect) -> None:
    database, fake = await connect(rows(200, True), rows(200, False))
    assert await database.waive_charge(SESSION, reason="broken heater") is True
    assert await database.waive_charge(SESSION, reason="broken heater") is False
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_waive_charge",
        body={"p_session_id": str(SESSION), "p_reason": "broken heater"},
    )


async def test_money_by_day(connect: Connect) -> None:
    day = {"day": "2026-11-26", "sessions": 2, "seconds": 1260, "taken_pence": 526, "owed_pence": 0}
    database, fake = await connect(rows(200, [day]))
    [found] = await database.money_by_day(
        since=datetime(2026, 10, 28, tzinfo=UTC), timezone="Europe/London"
    )
    assert (found.day.isoformat(), found.sessions, found.seconds, found.taken_pence) == (
        "2026-11-26",
        2,
        1260,
        526,
    )
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_money_by_day",
        body={"p_since": "2026-10-28T00:00:00+00:00", "p_timezone": "Europe/London"},
    )


async def test_list_session_refunds(connect: Connect) -> None:
    refund = {
        "amount_pence": 150,
        "state": "succeeded",
        "reason": None,
        "by_operator": False,
        "stripe_refund_id": "re_1",
        "created_at": "2026-11-26T11:00:00+00:00",
    }
    database, fake = await connect(rows(200, [refund]))
    [found] = await database.list_session_refunds(SESSION)
    assert found == SessionRefund(
        amount_pence=150,
        state="succeeded",
        reason=None,
        by_operator=False,
        stripe_refund_id="re_1",
        created_at=datetime(2026, 11, 26, 11, 0, tzinfo=UTC),
    )
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_list_session_refunds",
        body={"p_session_id": str(SESSION)},
    )


async def test_refunds_by_day(connect: Connect) -> None:
    database, fake = await connect(rows(200, [{"day": "2026-11-26", "refunded_pence": 150}]))
    found = await database.refunds_by_day(
        since=datetime(2026, 10, 28, tzinfo=UTC), timezone="Europe/London"
    )
    assert found == {date(2026, 11, 26): 150}
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_refunds_by_day",
        body={"p_since": "2026-10-28T00:00:00+00:00", "p_timezone": "Europe/London"},
    )


async def test_forget_attempts(connect: Connect) -> None:
    database, fake = await connect(no_content())
    await database.forget_attempts("admin_sign_in:ip:203.0.113.5")
    assert_request(
        fake.requests[0],
        "POST",
        "/rest/v1/rpc/qwip_forget_attempts",
        body={"p_key": "admin_sign_in:ip:203.0.113.5"},
    )
