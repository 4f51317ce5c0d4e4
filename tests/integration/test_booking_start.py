"""What may start a session: a SetupIntent that Stripe says is real (succeeded, with a card
and a Customer), fresh (inside BOOKING_WINDOW_MINUTES), and not refused before. Against
Postgres, localstripe and an SMTP server; events signed with the test secret."""

import asyncio
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import stripe

from svc.database_accessor import PostgresDatabase
from svc.main import create_app
from svc.models.records import NewPod
from tests.integration.conftest import SettingsFactory, running
from tests.support import booking
from tests.support.booking import SavedCard
from tests.support.mail import Mailbox
from tests.support.settings import WEBHOOK_SECRET
from tests.support.stripe_helpers import (
    CARD_NEEDS_AUTHENTICATION,
    age,
    create_card,
    payment_intents_of,
    signed_event,
)

POD_TAKEN = (
    "Pod 'pod1' was taken by someone else moments ago, so your session did not start. "
    "You have not been charged."
)
EXPIRED = (
    "This booking has expired: the card was saved more than 30 minutes ago, so the session "
    "did not start. You have not been charged. Please book again."
)


@pytest.fixture
async def pod1(db: PostgresDatabase) -> int:
    pod = await db.insert_pod(
        NewPod(name="pod1", address="1 Demo Street", price=Decimal("0.25"), currency="gbp")
    )
    return pod.id


async def deliver(client: httpx.AsyncClient, obj: dict[str, Any], **kw: Any) -> httpx.Response:
    body, headers = signed_event("setup_intent.succeeded", obj, WEBHOOK_SECRET, **kw)
    return await client.post("/webhook/stripe", content=body, headers=headers)


async def confirm(client: httpx.AsyncClient, card: SavedCard) -> httpx.Response:
    return await client.post(
        "/api/confirm-booking",
        json={"setup_intent_id": card.setup_intent_id, "client_secret": card.client_secret},
    )


async def save_card(
    client: httpx.AsyncClient, stripe_client: stripe.StripeClient, email: str, **kw: Any
) -> SavedCard:
    return await booking.save_card(client, stripe_client, pod="pod1", email=email, **kw)


async def settle() -> None:
    """Long enough for the outbox (woken at once, 20 ms rounds) to send anything queued."""
    await asyncio.sleep(1)


async def test_a_late_event_after_pod_unavailable_starts_nothing(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    # Issue 15, finding 2, as observed: B holds the pod; A's confirm-booking is refused;
    # B ends; Stripe's (re)delivery of A's `setup_intent.succeeded` arrives.
    # (Both saved their cards while the pod was free; B confirmed first.)
    holder = await save_card(client, stripe_client, "b@example.com")
    card = await save_card(client, stripe_client, "a@example.com")
    held = await confirm(client, holder)
    assert held.status_code == 200, held.text
    refused = await confirm(client, card)
    assert (refused.status_code, refused.json()) == (409, {"detail": POD_TAKEN})
    [sorry] = await mailbox.wait_for("pod_unavailable", to="a@example.com")
    assert "You have not been charged." in sorry.text

    ended = await client.post("/api/end-session", json={"sessionId": held.json()["session_id"]})
    assert ended.status_code == 200, ended.text
    assert (await client.get("/api/pod?podName=pod1")).json()["in_use"] is False

    late = await deliver(client, card.setup_intent, event_id="evt_late")
    assert (late.status_code, late.json()) == (200, {"status": "duplicate"})
    again = await deliver(client, card.setup_intent, event_id="evt_late")
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    retried = await confirm(client, card)
    assert (retried.status_code, retried.json()) == (409, {"detail": POD_TAKEN})

    await settle()
    assert mailbox.messages("access_code", to="a@example.com") == []
    assert len(mailbox.messages("pod_unavailable", to="a@example.com")) == 1
    assert (await client.get("/api/pod?podName=pod1")).json()["in_use"] is False
    assert (
        await sql.fetchval(
            "select count(*) from pod_sessions where setup_intent_id = $1", card.setup_intent_id
        )
        == 0
    )
    assert (
        await sql.fetchval(
            "select outcome from setup_intent_outcomes where setup_intent_id = $1",
            card.setup_intent_id,
        )
        == "pod_unavailable"
    )
    assert await payment_intents_of(stripe_client, card.customer_id) == []


async def test_an_event_for_a_card_less_setup_intent_starts_nothing(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    # Issue 15, finding 3: a signed event whose body says `succeeded` for a SetupIntent that
    # has no card at all (Stripe: requires_payment_method).
    created = await client.get("/api/create-setup-intent?podName=pod1&email=a@example.com")
    assert created.status_code == 200
    setup = (
        await stripe_client.v1.setup_intents.retrieve_async(created.json()["setup_intent_id"])
    ).to_dict()
    assert (setup["status"], setup["payment_method"]) == ("requires_payment_method", None)

    response = await deliver(client, {**setup, "status": "succeeded"})
    assert (response.status_code, response.json()) == (200, {"status": "ignored"})
    forged_card = await create_card(stripe_client)
    response = await deliver(
        client, {**setup, "status": "succeeded", "payment_method": forged_card}
    )
    assert (response.status_code, response.json()) == (200, {"status": "ignored"})

    await settle()
    assert mailbox.messages() == []
    assert await sql.fetchval("select count(*) from pod_sessions") == 0
    assert await sql.fetchval("select count(*) from setup_intent_outcomes") == 0
    assert (await client.get("/api/pod?podName=pod1")).json()["in_use"] is False


async def test_a_forged_succeeded_body_for_a_setup_intent_stripe_says_is_not_starts_nothing(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    # A card that asks for 3-D Secure, never completed: Stripe says requires_action.
    created = (await client.get("/api/create-setup-intent?podName=pod1&email=a@example.com")).json()
    method = await create_card(stripe_client, card=CARD_NEEDS_AUTHENTICATION)
    pending = await stripe_client.v1.setup_intents.confirm_async(
        created["setup_intent_id"], params={"payment_method": method}
    )
    assert pending.status == "requires_action"
    forged = {**pending.to_dict(), "status": "succeeded", "next_action": None}

    response = await deliver(client, forged)
    assert (response.status_code, response.json()) == (200, {"status": "ignored"})
    page = await client.post(
        "/api/confirm-booking",
        json={
            "setup_intent_id": created["setup_intent_id"],
            "client_secret": created["client_secret"],
        },
    )
    assert (page.status_code, page.json()) == (
        409,
        {
            "detail": "The card setup has not succeeded (its status is 'requires_action'); "
            "confirm the card first."
        },
    )
    # an id Stripe does not know at all: acknowledged, so that Stripe stops retrying
    unknown = await deliver(client, {**forged, "id": "seti_forged"})
    assert (unknown.status_code, unknown.json()) == (200, {"status": "ignored"})

    await settle()
    assert mailbox.messages() == []
    assert await sql.fetchval("select count(*) from pod_sessions") == 0
    assert await sql.fetchval("select count(*) from stripe_events") == 0


async def test_the_event_body_never_names_the_pod(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    db: PostgresDatabase,
    pod1: int,
) -> None:
    pod2 = await db.insert_pod(
        NewPod(name="pod2", address="2 Side Road", price=Decimal("0.10"), currency="gbp")
    )
    card = await save_card(client, stripe_client, "a@example.com")
    claims_pod2 = {**card.setup_intent, "metadata": {"pod_id": str(pod2.id), "pod_name": "pod2"}}
    response = await deliver(client, claims_pod2)
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    [mail] = await mailbox.wait_for("access_code")
    assert mail.subject == "Your Qwip access code for pod1"
    assert await sql.fetchval("select pod_id from pod_sessions") == pod1


async def test_a_setup_intent_without_a_customer_starts_nothing(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    intent = await stripe_client.v1.setup_intents.create_async(
        params={"usage": "off_session", "metadata": {"pod_id": str(pod1), "pod_name": "pod1"}}
    )
    method = await create_card(stripe_client, email="a@example.com")
    confirmed = await stripe_client.v1.setup_intents.confirm_async(
        intent.id, params={"payment_method": method}
    )
    assert (confirmed.status, confirmed.customer) == ("succeeded", None)
    response = await deliver(client, confirmed.to_dict())
    assert (response.status_code, response.json()) == (200, {"status": "ignored"})
    page = await client.post(
        "/api/confirm-booking",
        json={"setup_intent_id": intent.id, "client_secret": intent.client_secret},
    )
    assert (page.status_code, page.json()) == (
        409,
        {"detail": "The card setup has no customer; create it with this service."},
    )
    await settle()
    assert mailbox.messages() == []
    assert await sql.fetchval("select count(*) from pod_sessions") == 0


async def test_an_old_setup_intent_starts_nothing_by_either_path(
    make_settings: SettingsFactory,
    localstripe_url: str,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    async with running(create_app(make_settings())) as client:
        card = await save_card(client, stripe_client, "a@example.com")
        age(localstripe_url, card.setup_intent_id, seconds=31 * 60)

        page = await confirm(client, card)
        assert (page.status_code, page.json()) == (409, {"detail": EXPIRED})
        event = await deliver(client, card.setup_intent)
        assert (event.status_code, event.json()) == (200, {"status": "ignored"})
        await settle()
        assert mailbox.messages() == []
        assert await sql.fetchval("select count(*) from pod_sessions") == 0
        assert await sql.fetchval("select count(*) from setup_intent_outcomes") == 0
        assert await sql.fetchval("select count(*) from stripe_events") == 0
        assert (await client.get("/api/pod?podName=pod1")).json()["in_use"] is False
        assert await payment_intents_of(stripe_client, card.customer_id) == []

    # The window is a setting: with 60 minutes the same card, 31 minutes old, books.
    async with running(create_app(make_settings(BOOKING_WINDOW_MINUTES=60))) as client:
        booked = await confirm(client, card)
        assert booked.status_code == 200, booked.text
        await mailbox.wait_for("access_code")


async def test_a_setup_intent_inside_the_window_starts(
    client: httpx.AsyncClient,
    localstripe_url: str,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    pod1: int,
) -> None:
    card = await save_card(client, stripe_client, "a@example.com")
    age(localstripe_url, card.setup_intent_id, seconds=29 * 60)
    response = await deliver(client, card.setup_intent)
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    await mailbox.wait_for("access_code")
