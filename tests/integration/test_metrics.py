"""GET /metrics over HTTP, scraped and read with prometheus_client's own parser, around a
real booking and end against Postgres, localstripe and an SMTP server."""

import asyncio
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import stripe
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from svc.database_accessor import PostgresDatabase
from svc.main import create_app
from svc.models.records import NewPod
from tests.integration.conftest import SettingsFactory, running
from tests.support import booking
from tests.support.mail import Mailbox
from tests.support.settings import WEBHOOK_SECRET
from tests.support.stripe_helpers import signed_event

CUSTOMER = "ada@example.com"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def pod(db: PostgresDatabase) -> None:
    await db.insert_pod(
        NewPod(name="pod1", address="1 Demo Street, London", price=Decimal("0.25"), currency="gbp")
    )


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples) -> dict[str, float]:
    """Every counter sample and histogram count that changed, by how much."""
    changes = {}
    for key, now in after.items():
        name, labels = key
        if name.endswith("_total") or name.endswith("_count"):
            change = now - before.get(key, 0.0)
            if change:
                changes[f"{name}{dict(sorted(labels))}"] = change
    return changes


async def until_sent(client: httpx.AsyncClient, kind: str) -> Samples:
    """The metrics once the e-mail sender has counted its `kind` message (its own task)."""
    for _ in range(200):
        samples = await scrape(client)
        if value(samples, "qwip_emails_sent_total", kind=kind):
            return samples
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind} e-mail counted")


async def backdate(sql: asyncpg.Connection, session_id: UUID, seconds: int) -> None:
    await sql.execute(
        "update pod_sessions set start_time = now() - make_interval(secs => $2) where id = $1",
        session_id,
        seconds,
    )


def http(method: str, route: str, status: int) -> str:
    labels = {"method": method, "route": route, "status": str(status)}
    return f"qwip_http_request_duration_seconds_count{dict(sorted(labels.items()))}"


async def test_a_booking_and_its_end_move_each_counter_by_exactly_one(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    mailbox: Mailbox,
    pod: None,
) -> None:
    async with running(create_app(make_settings())) as client:
        before = await scrape(client)
        card = await booking.save_card(client, stripe_client, pod="pod1", email=CUSTOMER)
        session_id = UUID((await booking.confirm_booking(client, card))["session_id"])
        await mailbox.wait_for("access_code", to=CUSTOMER)
        booked = await until_sent(client, "access_code")
        assert value(booked, "qwip_open_sessions") == 1

        await backdate(sql, session_id, 630)
        ended = await client.post("/api/end-session", json={"sessionId": str(session_id)})
        assert (ended.status_code, ended.json()["final_cost_pence"]) == (200, 263)
        await mailbox.wait_for("receipt", to=CUSTOMER)
        after = await until_sent(client, "receipt")

    changes = moved(before, after)
    assert {k: v for k, v in changes.items() if not k.startswith("qwip_http")} == {
        "qwip_bookings_started_total{}": 1,
        "qwip_charges_total{'outcome': 'succeeded'}": 1,
        "qwip_emails_sent_total{'kind': 'access_code'}": 1,
        "qwip_emails_sent_total{'kind': 'receipt'}": 1,
        "qwip_stripe_request_duration_seconds_count{'operation': 'POST /v1/customers'}": 1,
        "qwip_stripe_request_duration_seconds_count{'operation': 'POST /v1/setup_intents'}": 1,
        "qwip_stripe_request_duration_seconds_count{'operation': 'GET /v1/setup_intents/{id}'}": 1,
        "qwip_stripe_request_duration_seconds_count{'operation': 'GET /v1/customers/{id}'}": 1,
        "qwip_stripe_request_duration_seconds_count{'operation': 'POST /v1/payment_intents'}": 1,
    }
    assert changes[http("POST", "/api/create-setup-intent", 200)] == 1
    assert changes[http("POST", "/api/confirm-booking", 200)] == 1
    assert changes[http("POST", "/api/end-session", 200)] == 1
    assert (value(after, "qwip_open_sessions"), value(after, "qwip_owed_pence")) == (0, 0)
    assert value(after, "qwip_emails_waiting") == 0


async def test_with_a_hold_the_end_counts_one_capture_and_no_charge(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    mailbox: Mailbox,
    pod: None,
) -> None:
    async with running(create_app(make_settings(HOLD_MINUTES=60))) as client:
        card = await booking.save_card(client, stripe_client, pod="pod1", email=CUSTOMER)
        session_id = UUID((await booking.confirm_booking(client, card))["session_id"])
        before = await scrape(client)
        await backdate(sql, session_id, 630)
        ended = await client.post("/api/end-session", json={"sessionId": str(session_id)})
        assert (ended.status_code, ended.json()["captured_pence"]) == (200, 263)
        after = await scrape(client)

    money = {
        k: v
        for k, v in moved(before, after).items()
        if k.split("{")[0] in ("qwip_charges_total", "qwip_captures_total", "qwip_releases_total")
    }
    assert money == {"qwip_captures_total{'outcome': 'succeeded'}": 1}


async def test_holds_released_whole_are_counted_as_releases(
    make_settings: SettingsFactory, stripe_client: stripe.StripeClient, pod: None
) -> None:
    async with running(create_app(make_settings(HOLD_MINUTES=60))) as client:
        first = await booking.save_card(client, stripe_client, pod="pod1", email=CUSTOMER)
        second = await booking.save_card(client, stripe_client, pod="pod1", email="bo@example.com")
        before = await scrape(client)
        session_id = (await booking.confirm_booking(client, first))["session_id"]
        # The pod is taken: the second card's hold is released at once.
        refused = await client.post(
            "/api/confirm-booking",
            json={"setup_intent_id": second.setup_intent_id, "client_secret": second.client_secret},
        )
        assert refused.status_code == 409
        # Ended at once: below the minimum charge, the first hold is released whole.
        ended = await client.post("/api/end-session", json={"sessionId": session_id})
        assert (ended.status_code, ended.json()["payment_status"]) == (200, "not_charged")
        after = await scrape(client)

    money = {
        k: v
        for k, v in moved(before, after).items()
        if k.split("{")[0] in ("qwip_charges_total", "qwip_captures_total", "qwip_releases_total")
    }
    assert money == {"qwip_releases_total{'outcome': 'released'}": 2}


async def test_a_card_refused_for_a_taken_pod_counts_a_refusal_by_its_reason(
    client: httpx.AsyncClient, stripe_client: stripe.StripeClient, pod: None
) -> None:
    first = await booking.save_card(client, stripe_client, pod="pod1", email=CUSTOMER)
    second = await booking.save_card(client, stripe_client, pod="pod1", email="bo@example.com")
    before = await scrape(client)
    await booking.confirm_booking(client, first)
    refused = await client.post(
        "/api/confirm-booking",
        json={"setup_intent_id": second.setup_intent_id, "client_secret": second.client_secret},
    )
    assert refused.status_code == 409
    after = await scrape(client)

    bookings = {k: v for k, v in moved(before, after).items() if k.startswith("qwip_bookings")}
    assert bookings == {
        "qwip_bookings_started_total{}": 1,
        "qwip_bookings_refused_total{'reason': 'pod_unavailable'}": 1,
    }


async def test_webhook_events_are_counted_by_source_type_and_outcome(
    client: httpx.AsyncClient, stripe_client: stripe.StripeClient, pod: None
) -> None:
    card = await booking.save_card(client, stripe_client, pod="pod1", email=CUSTOMER)
    before = await scrape(client)
    body, headers = signed_event("setup_intent.succeeded", card.setup_intent, WEBHOOK_SECRET)
    first = await client.post("/webhook/stripe", content=body, headers=headers)
    again = await client.post("/webhook/stripe", content=body, headers=headers)
    forged = await client.post(
        "/webhook/stripe", content=body, headers={**headers, "Stripe-Signature": "t=1,v1=00"}
    )
    assert [r.status_code for r in (first, again, forged)] == [200, 200, 400]
    assert [first.json(), again.json()] == [{"status": "success"}, {"status": "duplicate"}]
    after = await scrape(client)

    events = {k: v for k, v in moved(before, after).items() if k.startswith("qwip_webhook")}
    labels = "{'outcome': '%s', 'source': 'stripe', 'type': '%s'}"
    assert events == {
        "qwip_webhook_events_total" + labels % ("success", "setup_intent.succeeded"): 1,
        "qwip_webhook_events_total" + labels % ("duplicate", "setup_intent.succeeded"): 1,
        "qwip_webhook_events_total" + labels % ("invalid", "unverified"): 1,
    }


async def test_metrics_are_not_in_the_public_api_description(client: httpx.AsyncClient) -> None:
    paths: dict[str, Any] = (await client.get("/openapi.json")).json()["paths"]
    assert "/metrics" not in paths and "/api/pods" in paths


async def test_an_unknown_path_is_counted_under_one_route_label(client: httpx.AsyncClient) -> None:
    for path in ("/nothing-here", "/nor-here"):
        assert (await client.get(path)).status_code == 404
    samples = await scrape(client)
    count = "qwip_http_request_duration_seconds_count"
    assert value(samples, count, method="GET", route="unmatched", status="404") == 2


async def test_two_apps_in_one_process_count_apart(
    make_settings: SettingsFactory, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/api/pods")).status_code == 200
    async with running(create_app(make_settings())) as other:
        samples = await scrape(other)
    count = "qwip_http_request_duration_seconds_count"
    assert value(samples, count, method="GET", route="/api/pods", status="200") == 0


async def test_with_metrics_token_a_scrape_needs_it_as_bearer(
    make_settings: SettingsFactory,
) -> None:
    refusal = {"detail": "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>."}
    async with running(create_app(make_settings(METRICS_TOKEN="s3cret-scrape"))) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-scrape"}):
            response = await client.get("/metrics", headers=headers)
            assert (response.status_code, response.json()) == (401, refusal)
        samples = await scrape(client, Authorization="Bearer s3cret-scrape")
    assert value(samples, "qwip_open_sessions") == 0
