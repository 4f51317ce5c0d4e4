"""The pods API, health checks and the preview, over HTTP against the real database."""

import gc
from datetime import timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from svc.database_accessor import PostgresDatabase
from svc.env import Settings
from svc.main import create_app
from svc.models.records import NewPod, StartSessionRequest
from tests.integration.conftest import SettingsFactory, running


@pytest.fixture
async def pods(db: PostgresDatabase) -> dict[str, int]:
    pod1 = await db.insert_pod(
        NewPod(name="pod1", address="1 Demo Street", price=Decimal("0.25"), currency="gbp")
    )
    quiet = await db.insert_pod(
        NewPod(name="quiet", address="2 Side Road", price=Decimal("0.125"), currency="gbp")
    )
    return {"pod1": pod1.id, "quiet": quiet.id}


POD1 = {
    "name": "pod1",
    "address": "1 Demo Street",
    "price_per_minute": "0.2500",
    "currency": "gbp",
    "in_use": False,
    "available": True,
    "out_of_service": None,
}


async def test_healthz_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_what_the_start_made_is_frozen_while_the_service_runs(app: FastAPI) -> None:
    # A full collection then walks what requests made, not the SDKs, the app and the pool.
    assert gc.get_freeze_count() == 0
    async with running(app) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert gc.get_freeze_count() > 10 * len(gc.get_objects(generation=2))
    assert gc.get_freeze_count() == 0


async def test_readyz_checks_the_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_is_503_when_the_database_is_gone(
    client: httpx.AsyncClient, database_url: str, postgres_server_url: str
) -> None:
    name = database_url.rsplit("/", 1)[1].split("?")[0]
    admin = await asyncpg.connect(postgres_server_url)
    try:
        # Refuse new connections to the test database, then end the service's pooled ones.
        await admin.execute(f'alter database "{name}" with allow_connections false')
        await admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1", name
        )
        response = await client.get("/readyz")
    finally:
        await admin.execute(f'alter database "{name}" with allow_connections true')
        await admin.close()
    assert response.status_code == 503
    assert response.json() == {
        "detail": "The database cannot be reached right now; please try again shortly."
    }
    assert (await client.get("/readyz")).status_code == 200


async def test_list_pods(client: httpx.AsyncClient, pods: dict[str, int]) -> None:
    response = await client.get("/api/pods")
    assert response.status_code == 200
    assert response.json() == [
        {"id": pods["pod1"], **POD1},
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
    ]


@pytest.mark.parametrize("query", ["podName=pod1", "pod_name=pod1", "podId={id}", "pod_id={id}"])
async def test_get_pod_by_any_spelling(
    client: httpx.AsyncClient, pods: dict[str, int], query: str
) -> None:
    response = await client.get("/api/pod?" + query.format(id=pods["pod1"]))
    assert (response.status_code, response.json()) == (200, {"id": pods["pod1"], **POD1})


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("podName=nope", "No pod named 'nope'."),
        (
            "podName=pod1%27%3B%20drop%20table%20pods%3B--",
            'No pod named "pod1\'; drop table pods;--".',
        ),
        ("podName=%E2%98%95%20caf%C3%A9", "No pod named '☕ café'."),
        ("podId=999", "No pod with id 999."),
    ],
)
async def test_unknown_pod_is_404(
    client: httpx.AsyncClient, pods: dict[str, int], query: str, detail: str
) -> None:
    response = await client.get("/api/pod?" + query)
    assert (response.status_code, response.json()) == (404, {"detail": detail})
    assert len((await client.get("/api/pods")).json()) == 2


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("", "Give the pod as podName (or pod_name) or podId (or pod_id)."),
        (
            "podId=abc",
            "podId (query): a pod id is a whole number from 1 to 9223372036854775807.",
        ),
        ("podId=-1", "podId (query): a pod id is a whole number from 1 to 9223372036854775807."),
        (
            "podId=99999999999999999999999",
            "podId (query): a pod id is a whole number from 1 to 9223372036854775807.",
        ),
        ("podName=pod%001", "podName (query): a pod name cannot contain a NUL character."),
    ],
)
async def test_missing_or_malformed_pod_is_422(
    client: httpx.AsyncClient, query: str, detail: str
) -> None:
    response = await client.get("/api/pod?" + query)
    assert (response.status_code, response.json()) == (422, {"detail": detail})


async def open_session(
    db: PostgresDatabase,
    sql: asyncpg.Connection,
    pod_id: int,
    *,
    minutes_ago: int,
    free_minutes: int = 0,
) -> UUID:
    """An open session that started `minutes_ago` minutes and 30 seconds ago."""
    session_id = uuid4()
    await db.start_session(
        StartSessionRequest(
            event_id=None,
            event_type=None,
            session_id=session_id,
            setup_intent_id=f"seti_{session_id.hex[:8]}",
            pod_id=pod_id,
            user_email="ada@example.com",
            customer_id="cus_1",
            payment_method="pm_1",
            access_code="123456",
            free_minutes=free_minutes,
            started_email=None,
            unavailable_email=None,
        )
    )
    await sql.execute(
        "update pod_sessions set start_time = now() - $2::interval where id = $1",
        session_id,
        timedelta(minutes=minutes_ago, seconds=30),
    )
    return session_id


async def test_preview_of_an_open_session(
    client: httpx.AsyncClient, db: PostgresDatabase, sql: asyncpg.Connection, pods: dict[str, int]
) -> None:
    session_id = await open_session(db, sql, pods["pod1"], minutes_ago=10)
    for query in (f"sessionId={session_id}", f"session_id={session_id}"):
        response = await client.get(f"/api/end-session-preview?{query}")
        assert response.status_code == 200
        body = response.json()
        assert body["elapsed_seconds"] in range(630, 633)  # 10 min 30 s, and the request's time
        assert body == {
            "session_id": str(session_id),
            "pod_name": "pod1",
            "start_time": body["start_time"],
            "end_time": None,
            "elapsed_seconds": body["elapsed_seconds"],
            "cost": "2.63",
            "cost_pence": 263,
            "currency": "gbp",
            "is_complete": False,
            "payment_status": None,
            "hold_pence": None,
            "captured_pence": None,
            "released_pence": None,
        }


async def test_preview_counts_the_free_minutes_the_session_was_booked_with(
    client: httpx.AsyncClient, db: PostgresDatabase, sql: asyncpg.Connection, pods: dict[str, int]
) -> None:
    # booked while FREE_MINUTES was 5; the service now runs with none
    session_id = await open_session(db, sql, pods["pod1"], minutes_ago=10, free_minutes=5)
    body = (await client.get(f"/api/end-session-preview?sessionId={session_id}")).json()
    # 10 min 30 s less 5 free minutes at 0.25 a minute: 137.5p, half-up
    assert (body["elapsed_seconds"] in range(630, 633), body["cost_pence"]) == (True, 138)


async def test_preview_of_an_ended_session_is_fixed(
    client: httpx.AsyncClient, db: PostgresDatabase, sql: asyncpg.Connection, pods: dict[str, int]
) -> None:
    session_id = await open_session(db, sql, pods["pod1"], minutes_ago=10)
    await db.end_session(session_id, max_minutes=180, lease_seconds=60)
    first = (await client.get(f"/api/end-session-preview?sessionId={session_id}")).json()
    second = (await client.get(f"/api/end-session-preview?sessionId={session_id}")).json()
    assert first == second
    assert (first["is_complete"], first["cost_pence"], first["cost"], first["payment_status"]) == (
        True,
        263,
        "2.63",
        "pending",
    )


@pytest.mark.parametrize(
    ("query", "status", "detail"),
    [
        (f"sessionId={uuid4()}", 404, "No session with this id."),
        ("", 422, "Give the session as sessionId (or session_id)."),
        (
            "sessionId=42",
            422,
            "sessionId (query): a session id is a UUID, like the one in the end-session link.",
        ),
        (
            "sessionId=%27%20or%201%3D1--",
            422,
            "sessionId (query): a session id is a UUID, like the one in the end-session link.",
        ),
    ],
)
async def test_preview_rejects_unknown_and_malformed_ids(
    client: httpx.AsyncClient, query: str, status: int, detail: str
) -> None:
    response = await client.get(f"/api/end-session-preview?{query}")
    assert (response.status_code, response.json()) == (status, {"detail": detail})


async def test_cors_allows_only_the_configured_origins(make_settings: SettingsFactory) -> None:
    settings: Settings = make_settings(PUBLIC_URL="https://pods.example.com")
    async with running(create_app(settings)) as http:
        allowed = await http.get("/healthz", headers={"Origin": "https://pods.example.com"})
        other = await http.get("/healthz", headers={"Origin": "https://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://pods.example.com"
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-credentials" not in allowed.headers
