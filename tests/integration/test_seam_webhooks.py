"""Seam's webhook, signed with the svix library's own signer so the real verification runs,
and pods out of service: a lock offline (from an event, or from Seam's fake server when a
booking starts) or the operator's word."""

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
import stripe
from seam import AsyncSeam
from svix.webhooks import Webhook

from svc.database_accessor import PostgresDatabase
from svc.env import Settings
from svc.main import create_app
from svc.models.records import NewPod
from tests.conftest import ROOT, free_port, unavailable
from tests.integration.conftest import SettingsFactory, running
from tests.integration.test_booking_lifecycle import book
from tests.integration.test_database_accessor import start_request
from tests.integration.test_locks import (
    LOCK,
    OTHER_LOCK,
    SEAM_KEY,
    codes_on_lock,
    seam_down,
    wait_until,
)
from tests.integration.test_metrics import moved, scrape
from tests.support.settings import OPERATOR

SECRET = "whsec_" + base64.b64encode(b"qwip seam webhook test secret!!!").decode()
CUSTOMER = "ada@example.com"
OFFLINE_WORDS = (
    "Pod 'locked' is out of service: its door lock is offline. Nothing was charged; please "
    "choose another pod."
)
BAD_SIGNATURE = (
    "Missing, invalid or stale Seam signature (svix-id, svix-timestamp, svix-signature; at "
    "most 5 minutes old)."
)
CODE_ID = "0b0e4d6c-0d6f-4f44-9f64-6a8c2d1e0001"


def seam_event(event_type: str, *, at: datetime | None = None, **fields: Any) -> dict[str, Any]:
    """An event as Seam sends it (the fields its webhook carries)."""
    occurred = (at or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    return {
        "event_id": str(uuid4()),
        "event_type": event_type,
        "workspace_id": "seed_workspace_1",
        "created_at": occurred,
        "occurred_at": occurred,
        **fields,
    }


def signed(
    event: dict[str, Any], *, secret: str = SECRET, sent: datetime | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event)
    message_id = f"msg_{uuid4().hex}"
    timestamp = sent or datetime.now(UTC)
    signature = Webhook(secret).sign(message_id, timestamp, body)
    return body.encode(), {
        "svix-id": message_id,
        "svix-timestamp": str(int(timestamp.timestamp())),
        "svix-signature": signature,
        "content-type": "application/json",
    }


async def deliver(client: httpx.AsyncClient, event: dict[str, Any], **kw: Any) -> httpx.Response:
    body, headers = signed(event, **kw)
    return await client.post("/webhook/seam", content=body, headers=headers)


def device_event(event_type: str, device: str = LOCK, **fields: Any) -> dict[str, Any]:
    return seam_event(
        event_type, device_id=device, connected_account_id="john_connected_account_id", **fields
    )


@pytest.fixture
def hook_settings(make_settings: SettingsFactory, fake_seam_url: str) -> Settings:
    return make_settings(
        SEAM_API_KEY=SEAM_KEY,
        SEAM_ENDPOINT=fake_seam_url,
        SEAM_RETRY_BASE_SECONDS=0.05,
        SEAM_WEBHOOK_SECRET=SECRET,
        LOCK_STATUS_CACHE_SECONDS=0,
    )


@pytest.fixture
async def client(hook_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(hook_settings)) as http:
        yield http


@pytest.fixture
async def seam_sdk(fake_seam_url: str) -> AsyncIterator[AsyncSeam]:
    """The test's own look at the fake Seam, through Seam's SDK."""
    async with AsyncSeam(api_key=SEAM_KEY, endpoint=fake_seam_url) as sdk:
        yield sdk


@pytest.fixture
async def pods(db: PostgresDatabase) -> dict[str, int]:
    ids = {}
    for name, device in (("locked", LOCK), ("frontdoor", OTHER_LOCK), ("plain", None)):
        pod = await db.insert_pod(
            NewPod(
                name=name,
                address="1 Lock Lane",
                price=Decimal("0.25"),
                currency="gbp",
                seam_device_id=device,
            )
        )
        ids[name] = pod.id
    return ids


async def pod_listed(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await client.get("/api/pods")
    assert response.status_code == 200, response.text
    [pod] = [pod for pod in response.json() if pod["name"] == name]
    return {key: pod[key] for key in ("in_use", "available", "out_of_service")}


# Each test's own customer, so that the Customers it made at Stripe can be counted.
SHOPPER = f"shopper-{uuid4().hex[:10]}@example.com"


async def card_setup(client: httpx.AsyncClient, pod: str) -> httpx.Response:
    return await client.post("/api/create-setup-intent", json={"podName": pod, "email": SHOPPER})


async def customers_of(stripe_client: stripe.StripeClient) -> int:
    found = await stripe_client.v1.customers.list_async(params={"email": SHOPPER, "limit": 100})
    return len(found.data)


async def operator_alerts(sql: asyncpg.Connection) -> list[str]:
    rows = await sql.fetch(
        "select payload->>'subject' as subject from email_outbox "
        "where recipient = $1 and kind = 'operator_alert' order by id",
        OPERATOR,
    )
    return [row["subject"] for row in rows]


AVAILABLE = {"in_use": False, "available": True, "out_of_service": None}
OFFLINE = {"in_use": False, "available": False, "out_of_service": "its door lock is offline"}


# A lock offline, from Seam's events


async def test_a_disconnected_lock_makes_the_pod_unbookable_and_a_reconnect_bookable(
    client: httpx.AsyncClient,
    pods: dict[str, int],
    stripe_client: stripe.StripeClient,
) -> None:
    assert await pod_listed(client, "locked") == AVAILABLE
    customers = await customers_of(stripe_client)
    went = datetime.now(UTC)

    response = await deliver(client, device_event("device.disconnected", at=went))
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    assert await pod_listed(client, "locked") == OFFLINE
    assert await pod_listed(client, "frontdoor") == AVAILABLE
    refused = await card_setup(client, "locked")
    assert (refused.status_code, refused.json()) == (409, {"detail": OFFLINE_WORDS})
    assert await customers_of(stripe_client) == customers  # nothing made at Stripe
    page = await client.get("/book?podName=locked")
    assert "This pod is out of service: its door lock is offline." in page.text
    assert 'id="booking-form"' not in page.text

    back = await deliver(client, device_event("device.connected", at=went + timedelta(seconds=30)))
    assert (back.status_code, back.json()) == (200, {"status": "success"})
    assert await pod_listed(client, "locked") == AVAILABLE
    booked = await card_setup(client, "locked")
    assert booked.status_code == 200, booked.text
    assert await customers_of(stripe_client) == customers + 1


async def test_a_late_connected_event_older_than_the_disconnection_changes_nothing(
    client: httpx.AsyncClient, pods: dict[str, int]
) -> None:
    went = datetime.now(UTC)
    await deliver(client, device_event("device.disconnected", at=went))
    late = await deliver(client, device_event("device.connected", at=went - timedelta(seconds=30)))
    assert (late.status_code, late.json()) == (200, {"status": "success"})
    assert await pod_listed(client, "locked") == OFFLINE


async def test_the_operator_is_told_once_per_incident(
    client: httpx.AsyncClient, pods: dict[str, int], sql: asyncpg.Connection
) -> None:
    went = datetime.now(UTC)
    for seconds in (0, 5):
        answer = await deliver(
            client, device_event("device.disconnected", at=went + timedelta(seconds=seconds))
        )
        assert answer.json() == {"status": "success"}
    assert await operator_alerts(sql) == ["the lock of locked is offline"]

    await deliver(client, device_event("device.connected", at=went + timedelta(seconds=10)))
    await deliver(client, device_event("device.disconnected", at=went + timedelta(seconds=15)))
    assert await operator_alerts(sql) == ["the lock of locked is offline"] * 2

    await deliver(client, device_event("device.low_battery", battery_level=0.12))
    await deliver(
        client,
        device_event(
            "device.battery_status_changed", battery_status="critical", battery_level=0.05
        ),
    )
    await deliver(client, device_event("device.tampered", device=OTHER_LOCK))
    assert await operator_alerts(sql) == ["the lock of locked is offline"] * 2 + [
        "the lock of locked has a low battery",
        "the lock of frontdoor reports tampering",
    ]
    await deliver(
        client,
        device_event("device.battery_status_changed", battery_status="good", battery_level=0.9),
    )
    await deliver(client, device_event("device.low_battery", battery_level=0.1))
    assert (await operator_alerts(sql))[-1] == "the lock of locked has a low battery"
    assert len(await operator_alerts(sql)) == 5
    row = await sql.fetchrow(
        "select lock_battery_low, lock_battery_level, lock_tampered_at is not null as tampered "
        "from pods where name = $1",
        "locked",
    )
    assert dict(row) == {
        "lock_battery_low": True,
        "lock_battery_level": Decimal("0.100"),
        "tampered": False,
    }


async def test_a_replayed_event_changes_nothing(
    client: httpx.AsyncClient, pods: dict[str, int], sql: asyncpg.Connection
) -> None:
    went = datetime.now(UTC)
    disconnected = device_event("device.disconnected", at=went)
    assert (await deliver(client, disconnected)).json() == {"status": "success"}
    await deliver(client, device_event("device.connected", at=went + timedelta(seconds=5)))

    replay = await deliver(client, disconnected)
    assert (replay.status_code, replay.json()) == (200, {"status": "duplicate"})
    assert await pod_listed(client, "locked") == AVAILABLE
    assert await operator_alerts(sql) == ["the lock of locked is offline"]


async def test_seam_events_are_counted_in_the_metrics_by_type_and_outcome(
    client: httpx.AsyncClient, pods: dict[str, int]
) -> None:
    before = await scrape(client)
    disconnected = device_event("device.disconnected")
    assert (await deliver(client, disconnected)).json() == {"status": "success"}
    assert (await deliver(client, disconnected)).json() == {"status": "duplicate"}
    assert (await deliver(client, seam_event("device.added"))).json() == {"status": "ignored"}
    body, headers = _other_secret(device_event("device.connected"))
    assert (await client.post("/webhook/seam", content=body, headers=headers)).status_code == 400
    after = await scrape(client)

    events = {k: v for k, v in moved(before, after).items() if k.startswith("qwip_webhook")}
    labels = "{'outcome': '%s', 'source': 'seam', 'type': '%s'}"
    assert events == {
        "qwip_webhook_events_total" + labels % ("success", "device.disconnected"): 1,
        "qwip_webhook_events_total" + labels % ("duplicate", "device.disconnected"): 1,
        "qwip_webhook_events_total" + labels % ("ignored", "device.added"): 1,
        "qwip_webhook_events_total" + labels % ("invalid", "unverified"): 1,
    }


def _stale(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return signed(event, sent=datetime.now(UTC) - timedelta(minutes=6))


def _other_secret(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return signed(event, secret="whsec_" + base64.b64encode(b"another secret").decode())


def _tampered(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body, headers = signed({**event, "device_id": OTHER_LOCK})
    return json.dumps(event).encode(), headers


def _unsigned(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return json.dumps(event).encode(), {"content-type": "application/json"}


def _garbled(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body, headers = signed(event)
    return body, {**headers, "svix-signature": "v1 not-base64!"}


@pytest.mark.parametrize("how", [_stale, _other_secret, _tampered, _unsigned, _garbled])
async def test_a_badly_signed_event_changes_nothing(
    client: httpx.AsyncClient, pods: dict[str, int], sql: asyncpg.Connection, how: Any
) -> None:
    body, headers = how(device_event("device.disconnected"))
    response = await client.post("/webhook/seam", content=body, headers=headers)
    assert (response.status_code, response.json()) == (400, {"detail": BAD_SIGNATURE})
    assert await pod_listed(client, "locked") == AVAILABLE
    assert await sql.fetchval("select count(*) from seam_events") == 0
    assert await operator_alerts(sql) == []


async def test_a_signed_body_that_is_not_an_event_is_refused(
    client: httpx.AsyncClient, pods: dict[str, int]
) -> None:
    response = await deliver(client, {"hello": "world"})
    assert (response.status_code, response.json()) == (
        400,
        {"detail": "The body is not a Seam event (no event_id or event_type)."},
    )


async def test_an_event_type_not_handled_is_acknowledged(
    client: httpx.AsyncClient, pods: dict[str, int], sql: asyncpg.Connection
) -> None:
    response = await deliver(client, device_event("device.added"))
    assert (response.status_code, response.json()) == (200, {"status": "ignored"})
    assert await sql.fetchval("select count(*) from seam_events") == 0


async def test_without_seam_webhook_secret_every_event_is_refused(
    make_settings: SettingsFactory, pods: dict[str, int]
) -> None:
    async with running(create_app(make_settings())) as http:
        response = await deliver(http, device_event("device.disconnected"))
        assert (response.status_code, response.json()) == (
            400,
            {
                "detail": "Seam webhooks are not enabled on this service: SEAM_WEBHOOK_SECRET "
                "is not set."
            },
        )
        assert await pod_listed(http, "locked") == AVAILABLE


# A session's code, and the unlocks it makes


@pytest.fixture
async def seamless(
    make_settings: SettingsFactory, db: PostgresDatabase, pods: dict[str, int]
) -> AsyncIterator[tuple[httpx.AsyncClient, UUID]]:
    """A session whose code Seam made (status `setting`), with Seam unreachable since: what
    the page learns then, it learns from the webhook alone."""
    request = start_request(pods["locked"])
    await db.start_session(request)
    await db.record_access_code(request.session_id, access_code_id=CODE_ID, status="setting")
    settings = seam_down(make_settings, SEAM_WEBHOOK_SECRET=SECRET)
    async with running(create_app(settings)) as http:
        yield http, request.session_id


def status_of(session_id: UUID, status: str, **changes: Any) -> dict[str, Any]:
    return {
        "session_id": str(session_id),
        "pod_name": "locked",
        "is_complete": False,
        "smart_lock": True,
        "access_code_status": status,
        "lock_has_code": status == "set",
        "backup_code_in_use": False,
        "first_unlocked_at": None,
        "unlock_count": 0,
        **changes,
    }


async def session_status(http: httpx.AsyncClient, session_id: UUID) -> dict[str, Any]:
    response = await http.get(f"/api/session-status?sessionId={session_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_code_set_on_device_shows_on_the_page_without_asking_seam(
    seamless: tuple[httpx.AsyncClient, UUID],
) -> None:
    http, session_id = seamless
    assert await session_status(http, session_id) == status_of(session_id, "setting")
    event = seam_event(
        "access_code.set_on_device", access_code_id=CODE_ID, device_id=LOCK, code="123456"
    )
    response = await deliver(http, event)
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    assert await session_status(http, session_id) == status_of(session_id, "set")


async def test_unlocks_by_the_sessions_code_are_recorded_once_each(
    seamless: tuple[httpx.AsyncClient, UUID],
) -> None:
    http, session_id = seamless
    first = datetime(2026, 11, 30, 9, 0, 5, tzinfo=UTC)

    def unlocked(minutes: int) -> dict[str, Any]:
        return seam_event(
            "lock.unlocked",
            at=first + timedelta(minutes=minutes),
            access_code_id=CODE_ID,
            device_id=LOCK,
            method="keycode",
        )

    # In any order: the earliest is the first unlock, whenever it arrives.
    middle, earliest, latest = unlocked(2), unlocked(0), unlocked(5)
    for event in (middle, earliest, latest):
        assert (await deliver(http, event)).json() == {"status": "success"}
    assert (await deliver(http, latest)).json() == {"status": "duplicate"}
    manual = seam_event("lock.unlocked", device_id=LOCK, method="manual")
    assert (await deliver(http, manual)).json() == {"status": "ignored"}
    assert await session_status(http, session_id) == status_of(
        session_id, "setting", first_unlocked_at="2026-11-30T09:00:05Z", unlock_count=3
    )


async def test_a_code_seam_has_set_is_not_given_up_by_a_late_failure(
    seamless: tuple[httpx.AsyncClient, UUID], sql: asyncpg.Connection
) -> None:
    http, session_id = seamless
    await deliver(http, seam_event("access_code.set_on_device", access_code_id=CODE_ID))
    late = seam_event("access_code.delay_in_setting_on_device", access_code_id=CODE_ID)
    assert (await deliver(http, late)).json() == {"status": "success"}
    assert await session_status(http, session_id) == status_of(session_id, "set")
    assert await sql.fetchval("select count(*) from email_outbox where kind = 'lock_failed'") == 0


# A lock offline when a booking starts, from Seam's own device state


@pytest.fixture(scope="module")
def offline_seam_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Seam's fake server with `august_device_2` offline (the fake has no route for it)."""
    from svc.local import stop_process

    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "@seamapi" / "fake-seam-connect").exists():
        unavailable("the fake Seam server needs Node.js and `npm ci`")
    assert node is not None
    log = tmp_path_factory.mktemp("offline-seam") / "fake-seam.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [node, str(Path(__file__).parents[1] / "support" / "fake_seam_offline.mjs")],
            cwd=ROOT,
            env={**os.environ, "PORT": str(port), "QWIP_OFFLINE_DEVICES": OTHER_LOCK},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"the fake Seam server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_process(process)
            pytest.fail(f"the fake Seam server did not answer {url}/health within 30 s")
        time.sleep(0.05)
    yield url
    stop_process(process)


async def test_a_lock_seam_says_is_offline_refuses_the_booking_and_tells_the_operator_once(
    make_settings: SettingsFactory,
    offline_seam_url: str,
    pods: dict[str, int],
    sql: asyncpg.Connection,
    stripe_client: stripe.StripeClient,
) -> None:
    settings = make_settings(
        SEAM_API_KEY=SEAM_KEY, SEAM_ENDPOINT=offline_seam_url, LOCK_STATUS_CACHE_SECONDS=0
    )
    customers = await customers_of(stripe_client)
    async with running(create_app(settings)) as http:
        assert await pod_listed(http, "frontdoor") == AVAILABLE
        for _ in range(2):
            refused = await card_setup(http, "frontdoor")
            assert (refused.status_code, refused.json()) == (
                409,
                {"detail": OFFLINE_WORDS.replace("'locked'", "'frontdoor'")},
            )
        assert await pod_listed(http, "frontdoor") == OFFLINE
        assert await operator_alerts(sql) == ["the lock of frontdoor is offline"]
        assert await customers_of(stripe_client) == customers
        booked = await card_setup(http, "locked")  # august_device_1 is online
        assert booked.status_code == 200, booked.text
        assert await pod_listed(http, "locked") == AVAILABLE


# The operator's word


async def test_a_disabled_pod_cannot_be_booked_and_a_running_session_goes_on(
    client: httpx.AsyncClient,
    db: PostgresDatabase,
    pods: dict[str, int],
    stripe_client: stripe.StripeClient,
) -> None:
    _, session_id = await book(client, stripe_client, pod="plain", email=CUSTOMER)
    assert await db.set_pod_disabled("plain", reason="cleaning until 3 pm") is True
    assert await pod_listed(client, "plain") == {
        "in_use": True,
        "available": False,
        "out_of_service": "cleaning until 3 pm",
    }
    preview = await client.get(f"/api/end-session-preview?sessionId={session_id}")
    assert preview.status_code == 200, preview.text
    ended = await client.post("/api/end-session", json={"sessionId": str(session_id)})
    assert (ended.status_code, ended.json()["payment_status"]) == (200, "not_charged")

    refused = await card_setup(client, "plain")
    assert (refused.status_code, refused.json()) == (
        409,
        {
            "detail": "Pod 'plain' is out of service: cleaning until 3 pm. Nothing was charged; "
            "please choose another pod."
        },
    )
    page = await client.get("/")
    assert "Out of service" in page.text

    assert await db.set_pod_disabled("plain", reason=None) is True
    assert await pod_listed(client, "plain") == AVAILABLE
    assert (await card_setup(client, "plain")).status_code == 200
    assert await db.set_pod_disabled("nosuchpod", reason="x") is False


@pytest.mark.parametrize(
    "event_type",
    ["access_code.failed_to_set_on_device", "access_code.delay_in_setting_on_device"],
)
async def test_a_code_the_lock_does_not_take_gets_a_backup_code_and_the_session_goes_on(
    client: httpx.AsyncClient,
    pods: dict[str, int],
    stripe_client: stripe.StripeClient,
    seam_sdk: AsyncSeam,
    sql: asyncpg.Connection,
    event_type: str,
) -> None:
    """Seam's word that the code did not reach the lock leads to the lock worker's failure
    path: a code from the lock's backup pool, e-mailed, and the session goes on; at its
    end, both codes come off the lock."""
    seam = seam_sdk
    _, session_id = await book(client, stripe_client, pod="locked", email=CUSTOMER)

    async def code_made() -> bool:
        return bool(
            await sql.fetchval("select access_code_id from pod_sessions where id = $1", session_id)
        )

    await wait_until(code_made)
    [on_lock] = await codes_on_lock(seam, session_id)
    # As a lock still taking the code leaves it (Seam's fake sets codes at once).
    await sql.execute(
        "update pod_sessions set access_code_status = 'setting' where id = $1", session_id
    )
    failed = seam_event(event_type, access_code_id=on_lock.access_code_id, device_id=LOCK)
    assert (await deliver(client, failed)).json() == {"status": "success"}
    assert (await deliver(client, failed)).json() == {"status": "duplicate"}

    row = await sql.fetchrow(
        "select end_time, backup_access_code_id, access_code_status from pod_sessions "
        "where id = $1",
        session_id,
    )
    assert row["end_time"] is None and row["access_code_status"] == "setting"
    backup = await seam.access_codes.get(access_code_id=row["backup_access_code_id"])
    assert (backup.is_backup, backup.device_id) == (True, LOCK)
    kinds = await sql.fetch("select kind from email_outbox where kind <> 'access_code'")
    assert sorted(r["kind"] for r in kinds) == ["backup_code", "operator_alert"]
    status = await session_status(client, session_id)
    assert (status["backup_code_in_use"], status["lock_has_code"]) == (True, True)

    ended = await client.post("/api/end-session", json={"sessionId": str(session_id)})
    assert ended.status_code == 200, ended.text

    async def codes_gone() -> bool:
        codes = await seam.access_codes.list(device_id=LOCK)
        ids = {code.access_code_id for code in codes}
        return not ids & {on_lock.access_code_id, backup.access_code_id}

    await wait_until(codes_gone)
    assert await sql.fetchval("select count(*) from email_outbox where kind = 'lock_failed'") == 0


async def test_openapi_documents_the_webhook_and_the_new_fields(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    webhook = document["paths"]["/webhook/seam"]["post"]
    assert sorted(webhook["responses"]) == ["200", "400", "413", "503"]
    assert "svix-signature" in webhook["description"]
    schemas = document["components"]["schemas"]
    assert {"available", "out_of_service"} <= set(schemas["PodPublic"]["properties"])
    assert {"available", "out_of_service"} <= set(schemas["PodPublic"]["required"])
    assert {"first_unlocked_at", "unlock_count"} <= set(schemas["SessionStatus"]["properties"])
