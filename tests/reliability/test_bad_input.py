"""Bad input and attacks against a production replica: each gets a clear 4xx and changes
nothing. Also what the logs may never show."""

import json
import re
import time
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest

from tests.reliability.conftest import (
    STRIPE_SECRET,
    WEBHOOK_SECRET,
    Cluster,
    save_card,
)
from tests.support.booking import confirm_booking
from tests.support.settings import OPERATOR
from tests.support.stripe_helpers import card_saved_outside_the_service, event_body, sign

Snapshot = dict[str, Any]


async def snapshot(sql: asyncpg.Connection) -> Snapshot:
    return {
        "pods": [
            tuple(r) for r in await sql.fetch("select name, price, in_use from pods order by id")
        ],
        "sessions": await sql.fetchval("select count(*) from pod_sessions"),
        "events": await sql.fetchval("select count(*) from stripe_events"),
        "emails": await sql.fetchval("select count(*) from email_outbox"),
    }


@pytest.fixture
async def webhook_card(fresh: Cluster, http: httpx.AsyncClient) -> dict[str, Any]:
    card = await save_card(fresh, http, pod="pod0", email="mal@example.com")
    return card.setup_intent


def signed(body: bytes, **kw: Any) -> dict[str, str]:
    return {
        "Stripe-Signature": sign(body, WEBHOOK_SECRET, **kw),
        "Content-Type": "application/json",
    }


INVALID_SIGNATURE = (
    "Invalid Stripe-Signature: it does not match this body and secret, or is older than 5 minutes."
)


async def test_webhook_attacks_get_a_clear_400_and_change_nothing(
    fresh: Cluster, http: httpx.AsyncClient, sql: asyncpg.Connection, webhook_card: dict[str, Any]
) -> None:
    body = event_body("setup_intent.succeeded", webhook_card)
    tampered = body.replace(b'"pod0"', b'"pod1"')
    attacks: list[tuple[str, bytes, dict[str, str], str]] = [
        (
            "no signature",
            body,
            {"Content-Type": "application/json"},
            "Missing Stripe-Signature header.",
        ),
        ("wrong secret", body, {"Stripe-Signature": sign(body, "whsec_guess")}, INVALID_SIGNATURE),
        ("tampered body", tampered, signed(body), INVALID_SIGNATURE),
        (
            "older than 300 s",
            body,
            signed(body, timestamp=int(time.time()) - 301),
            INVALID_SIGNATURE,
        ),
        ("malformed JSON", b'{"id": "evt_1",', signed(b'{"id": "evt_1",'), "The body is not JSON."),
        (
            "not an event",
            b'{"id": "evt_1"}',
            signed(b'{"id": "evt_1"}'),
            "The body is not a Stripe event (id, type, data.object).",
        ),
    ]
    before = await snapshot(sql)
    for name, payload, headers, detail in attacks:
        response = await http.post(
            f"{fresh.url(0)}/webhook/stripe", content=payload, headers=headers
        )
        assert (response.status_code, response.json()) == (400, {"detail": detail}), name
    assert await snapshot(sql) == before


async def test_a_five_megabyte_body_is_refused_with_413(
    fresh: Cluster, http: httpx.AsyncClient, sql: asyncpg.Connection
) -> None:
    before = await snapshot(sql)
    huge = b'{"padding": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    for path in ("/webhook/stripe", "/api/end-session", "/api/confirm-booking"):
        response = await http.post(f"{fresh.url(1)}{path}", content=huge, headers={**signed(huge)})
        assert (response.status_code, response.json()) == (
            413,
            {"detail": "The request body is larger than 1024 KiB."},
        ), path

    async def chunks() -> Any:  # no Content-Length: the limit counts what streams in
        for _ in range(6):
            yield b"x" * (1024 * 1024)

    streamed = await http.post(
        f"{fresh.url(1)}/webhook/stripe", content=chunks(), headers={"Stripe-Signature": "t=1,v1=x"}
    )
    assert streamed.status_code == 413
    assert await snapshot(sql) == before


async def test_a_chunked_body_of_1_1_megabytes_to_end_session_is_413(
    fresh: Cluster, http: httpx.AsyncClient, sql: asyncpg.Connection
) -> None:
    before = await snapshot(sql)

    async def chunks() -> Any:  # no Content-Length: the route's JSON parsing reads it
        yield b'{"sessionId": "'
        for _ in range(11):
            yield b"x" * (100 * 1024)
        yield b'"}'

    for path in ("/api/end-session", "/api/confirm-booking"):
        response = await http.post(
            f"{fresh.url(0)}{path}",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )
        assert "content-length" not in response.request.headers
        assert (response.status_code, response.json()) == (
            413,
            {"detail": "The request body is larger than 1024 KiB."},
        ), path
    assert await snapshot(sql) == before


HSTS = "max-age=63072000; includeSubDomains"


async def test_production_answers_tell_browsers_to_use_https_only(
    fresh: Cluster, http: httpx.AsyncClient
) -> None:
    answers = [
        await http.get(f"{fresh.url(0)}/"),
        await http.get(f"{fresh.url(0)}/book", params={"podName": "pod0"}),
        await http.get(f"{fresh.url(0)}/end-session", params={"sessionId": str(uuid4())}),
        await http.get(f"{fresh.url(0)}/static/qwip.css"),
        await http.get(f"{fresh.url(0)}/api/pods"),
        await http.get(f"{fresh.url(0)}/api/pod", params={"podName": "nowhere"}),
        await http.post(f"{fresh.url(0)}/api/end-session", content=b"x" * (2 * 1024 * 1024)),
    ]
    assert [(a.status_code, a.headers.get("strict-transport-security")) for a in answers] == [
        (200, HSTS),
        (200, HSTS),
        (404, HSTS),
        (200, HSTS),
        (200, HSTS),
        (404, HSTS),
        (413, HSTS),
    ]


async def test_a_replayed_event_with_a_new_timestamp_is_a_duplicate(
    fresh: Cluster, http: httpx.AsyncClient, sql: asyncpg.Connection, webhook_card: dict[str, Any]
) -> None:
    body = event_body("setup_intent.succeeded", webhook_card, event_id="evt_replayed")
    first = await http.post(f"{fresh.url(0)}/webhook/stripe", content=body, headers=signed(body))
    assert first.json() == {"status": "success"}
    after_first = await snapshot(sql)
    replay = await http.post(
        f"{fresh.url(1)}/webhook/stripe",
        content=body,
        headers=signed(body, timestamp=int(time.time()) + 5),
    )
    assert (replay.status_code, replay.json()) == (200, {"status": "duplicate"})
    assert await snapshot(sql) == after_first


async def test_an_event_for_a_pod_that_does_not_exist_starts_nothing_and_tells_the_operator(
    fresh: Cluster, http: httpx.AsyncClient, sql: asyncpg.Connection
) -> None:
    # Stripe itself must name the pod that does not exist: an event's body is never believed.
    assert fresh.stripe is not None
    ghost = await card_saved_outside_the_service(
        fresh.stripe, metadata={"pod_id": "424242", "pod_name": "no-such-pod"}
    )
    body = event_body("setup_intent.succeeded", ghost)
    response = await http.post(f"{fresh.url(0)}/webhook/stripe", content=body, headers=signed(body))
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    assert await sql.fetchval("select count(*) from pod_sessions") == 0
    assert await sql.fetchval("select count(*) from pods where in_use") == 0
    [alert] = await fresh.mailbox.wait_for("operator_alert", to=OPERATOR)
    assert "no-such-pod" in alert.subject


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "detail"),
    [
        (
            "GET",
            "/api/end-session-preview",
            {"params": {"sessionId": str(uuid4())}},
            404,
            "No session with this id.",
        ),
        (
            "GET",
            "/api/end-session-preview",
            {"params": {"sessionId": "1 OR 1=1"}},
            422,
            "sessionId (query): a session id is a UUID, like the one in the end-session link.",
        ),
        (
            "GET",
            "/api/pod",
            {"params": {"podName": "pod0'; DROP TABLE pods;--"}},
            404,
            'No pod named "pod0\'; DROP TABLE pods;--".',
        ),
        (
            "GET",
            "/api/pod",
            {"params": {"podName": "Ünïcødé 🚪 pod"}},
            404,
            "No pod named 'Ünïcødé 🚪 pod'.",
        ),
        (
            "GET",
            "/api/pod",
            {"params": {"podName": "x" * 201}},
            422,
            "podName (query): a pod name has at most 200 characters.",
        ),
        (
            "GET",
            "/api/pod",
            {"params": {"podId": "-5"}},
            422,
            "podId (query): a pod id is a whole number from 1 to 9223372036854775807.",
        ),
        (
            "GET",
            "/api/pod",
            {"params": {"podId": "1" + "0" * 30}},
            422,
            "podId (query): a pod id is a whole number from 1 to 9223372036854775807.",
        ),
        (
            "POST",
            "/api/create-setup-intent",
            {"json": {"podName": "%00\u202e", "email": "mal@example.com"}},
            404,
            "No pod named '%00\\u202e'.",  # invisible characters shown escaped
        ),
        (
            "POST",
            "/api/end-session",
            {
                "content": "sessionId=x",
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            },
            415,
            "Send the body as JSON, with Content-Type: application/json.",
        ),
        (
            "POST",
            "/api/end-session",
            {"content": json.dumps({"sessionId": str(uuid4())})},
            415,
            "Send the body as JSON, with Content-Type: application/json.",
        ),
        ("POST", "/api/end-session", {"json": {}}, 422, "sessionId (body): Field required"),
        (
            "POST",
            "/api/end-session",
            {"json": {"sessionId": 12345}},
            422,
            "sessionId (body): UUID input should be a string, bytes or UUID object",
        ),
        (
            "POST",
            "/api/end-session",
            {"content": "{not json", "headers": {"Content-Type": "application/json"}},
            422,
            "1 (body): JSON decode error",
        ),
        (
            "POST",
            "/api/confirm-booking",
            {"json": {"setup_intent_id": "seti_1"}},
            422,
            "client_secret (body): Field required",
        ),
        (
            "POST",
            "/api/confirm-booking",
            {"json": {"setup_intent_id": "", "client_secret": "seti_1_secret_x"}},
            422,
            "setup_intent_id (body): String should match pattern '^seti_[A-Za-z0-9]+$'",
        ),
        (
            "POST",
            "/api/confirm-booking",
            {"json": [1, 2]},
            422,
            "body (body): Input should be a valid dictionary or object to extract fields from",
        ),
    ],
)
async def test_bad_api_input_gets_a_4xx_that_says_what_was_wrong(
    fresh: Cluster,
    http: httpx.AsyncClient,
    sql: asyncpg.Connection,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    detail: str,
) -> None:
    before = await snapshot(sql)
    response = await http.request(method, f"{fresh.url(0)}{path}", **kwargs)
    assert (response.status_code, response.json()) == (status, {"detail": detail})
    assert await snapshot(sql) == before


async def test_cors_in_production_allows_only_the_public_origin(
    fresh: Cluster, http: httpx.AsyncClient
) -> None:
    own = await http.get(f"{fresh.url(0)}/api/pods", headers={"Origin": "http://qwip.test"})
    other = await http.get(f"{fresh.url(0)}/api/pods", headers={"Origin": "https://evil.example"})
    assert own.headers["access-control-allow-origin"] == "http://qwip.test"
    assert "access-control-allow-origin" not in other.headers
    preflight = await http.options(
        f"{fresh.url(0)}/api/end-session",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 400


async def test_session_ids_are_random_and_logs_keep_secrets_out(
    fresh: Cluster, http: httpx.AsyncClient, sql: asyncpg.Connection
) -> None:
    sessions = []
    for i in range(3):
        card = await save_card(fresh, http, pod=f"pod{i}", email=f"log{i}@example.com", replica=i)
        booked = await confirm_booking(http, card, base_url=fresh.url(i))
        session_id = booked["session_id"]
        sessions.append((session_id, booked["access_code"], card.client_secret))
        await http.get(
            f"{fresh.url(i + 1)}/api/end-session-preview", params={"sessionId": session_id}
        )
        await http.post(f"{fresh.url(i)}/api/end-session", json={"sessionId": session_id})
        # The same id in the other forms the routes accept, sent as a client may send them.
        for query in (
            f"session%5Fid={session_id}",
            f"sessionId=%7B{session_id.upper()}%7D",
            f"sessionId=urn:uuid:{session_id}",
            f"sessionId={session_id.replace('-', '')}",
        ):
            answer = await http.get(f"{fresh.url(i)}/api/session-status?{query}")
            assert answer.json()["session_id"] == session_id, query
    ids = [UUID(session_id) for session_id, _, _ in sessions]
    assert all(session_id.version == 4 for session_id in ids)
    assert len({session_id.int >> 64 for session_id in ids}) == 3  # not sequential

    logs = "".join(replica.output() for replica in fresh.replicas)
    assert "/api/end-session-preview?sessionId=" in logs  # the access log is on
    squeezed = logs.replace("-", "").lower()
    for session_id, code, client_secret in sessions:
        assert session_id not in logs
        assert session_id.replace("-", "")[8:] not in squeezed
        assert f"session%5Fid={session_id[:8]}…" in logs
        assert f"sessionId=%7B{session_id[:8].upper()}…%7D" in logs
        assert f"sessionId=urn:uuid:{session_id[:8]}…" in logs
        assert not re.search(rf"\b{code}\b", logs)
        assert client_secret not in logs
        assert f"sessionId={session_id[:8]}…" in logs
    for secret in (STRIPE_SECRET, WEBHOOK_SECRET):
        assert secret not in logs
