"""The hold at booking and its capture or release at the end (HOLD_MINUTES on), over
HTTP against Postgres, localstripe (with Stripe's idempotency) and an SMTP server."""

import asyncio
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import stripe

from svc.database_accessor import PostgresDatabase
from svc.main import create_app
from svc.models.records import NewPod
from tests.conftest import free_port
from tests.integration.conftest import SettingsFactory, running
from tests.support import booking
from tests.support.booking import SavedCard
from tests.support.mail import Mailbox
from tests.support.settings import WEBHOOK_SECRET
from tests.support.stripe_helpers import (
    CARD_DECLINED_AT_CHARGE,
    CARD_NEEDS_AUTHENTICATION,
    payment_intents_of,
    signed_event,
)

CUSTOMER = "ada@example.com"
HELD = 1500  # 60 minutes at £0.25


@pytest.fixture
async def pod_id(db: PostgresDatabase) -> int:
    pod = await db.insert_pod(
        NewPod(name="pod1", address="1 Demo Street, London", price=Decimal("0.25"), currency="gbp")
    )
    return pod.id


def holding(make_settings: SettingsFactory, **overrides: Any) -> Any:
    return make_settings(HOLD_MINUTES=60, **overrides)


async def save_card(
    client: httpx.AsyncClient, stripe_client: stripe.StripeClient, **kw: Any
) -> SavedCard:
    return await booking.save_card(client, stripe_client, pod="pod1", email=CUSTOMER, **kw)


async def book(
    client: httpx.AsyncClient, stripe_client: stripe.StripeClient
) -> tuple[SavedCard, UUID]:
    """A card saved and a session started on it; the card and the session's id."""
    card = await save_card(client, stripe_client)
    return card, UUID((await booking.confirm_booking(client, card))["session_id"])


async def end_while_stripe_is_down(make_settings: SettingsFactory, session_id: UUID) -> int:
    """The status of an end-session answered by a replica that cannot reach Stripe."""
    outage = holding(make_settings, STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}")
    async with running(create_app(outage)) as down:
        response = await down.post("/api/end-session", json={"sessionId": str(session_id)})
    return response.status_code


async def confirm(client: httpx.AsyncClient, card: SavedCard) -> httpx.Response:
    return await client.post(
        "/api/confirm-booking",
        json={"setup_intent_id": card.setup_intent_id, "client_secret": card.client_secret},
    )


async def ended_after(sql: asyncpg.Connection, session_id: UUID, seconds: int) -> None:
    await sql.execute(
        "update pod_sessions set start_time = now() - make_interval(secs => $2) where id = $1",
        session_id,
        seconds,
    )


async def hold_of(stripe_client: stripe.StripeClient, customer_id: str) -> dict[str, Any]:
    [hold] = [
        pi
        for pi in await payment_intents_of(stripe_client, customer_id)
        if pi["capture_method"] == "manual"
    ]
    return hold


async def refunded(stripe_client: stripe.StripeClient, charge: Any) -> int:
    """What was released of a captured hold: localstripe refunds the uncaptured rest."""
    charge_id = charge["id"] if isinstance(charge, dict) else charge
    found = await stripe_client.v1.refunds.list_async(params={"charge": charge_id})
    return sum(int(refund.amount) for refund in found.data)


def hold_fields(held: int | None, captured: int | None, released: int | None) -> dict[str, Any]:
    return {"hold_pence": held, "captured_pence": captured, "released_pence": released}


async def test_a_hold_is_placed_at_booking_and_ending_captures_exactly_the_cost(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    mailbox: Mailbox,
    pod_id: int,
) -> None:
    async with running(create_app(holding(make_settings))) as client:
        card = await save_card(client, stripe_client)
        response = await confirm(client, card)
        assert response.status_code == 200, response.text
        session_id = UUID(response.json()["session_id"])
        hold = await hold_of(stripe_client, card.customer_id)
        assert (hold["status"], hold["amount"], hold["metadata"]) == (
            "requires_capture",
            HELD,
            {
                "setup_intent_id": card.setup_intent_id,
                "pod_id": str(pod_id),
                "session_id": str(session_id),
                "purpose": "hold",
            },
        )
        preview = (await client.get(f"/api/end-session-preview?sessionId={session_id}")).json()
        assert {k: preview[k] for k in hold_fields(0, 0, 0)} == hold_fields(HELD, None, None)

        await ended_after(sql, session_id, 630)
        ended = await client.post("/api/end-session", json={"sessionId": str(session_id)})
        body = ended.json()
        assert (ended.status_code, body["payment_status"], body["final_cost_pence"]) == (
            200,
            "succeeded",
            263,
        )
        assert {k: body[k] for k in hold_fields(0, 0, 0)} == hold_fields(HELD, 263, HELD - 263)
        preview = (await client.get(f"/api/end-session-preview?sessionId={session_id}")).json()
        assert {k: preview[k] for k in hold_fields(0, 0, 0)} == hold_fields(HELD, 263, HELD - 263)
        [receipt] = await mailbox.wait_for("receipt", to=CUSTOMER)
    # One PaymentIntent only: the hold, captured for the cost, the rest released.
    [only] = await payment_intents_of(stripe_client, card.customer_id)
    assert (only["id"], only["status"]) == (hold["id"], "succeeded")
    assert await refunded(stripe_client, only["latest_charge"]) == HELD - 263
    assert "Held at booking: £15.00; captured: £2.63; released: £12.37." in receipt.text
    row = await sql.fetchrow(
        "select hold_payment_intent_id, hold_pence, captured_pence, released_pence"
        " from pod_sessions where id = $1",
        session_id,
    )
    assert tuple(row) == (hold["id"], HELD, 263, HELD - 263)


async def test_a_declined_hold_starts_nothing_and_nothing_is_owed(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    mailbox: Mailbox,
    pod_id: int,
) -> None:
    async with running(create_app(holding(make_settings))) as client:
        card = await save_card(client, stripe_client, card=CARD_DECLINED_AT_CHARGE)
        response = await confirm(client, card)
        assert (response.status_code, response.json()) == (
            402,
            {
                "detail": "Your card could not hold £15.00 (Your card was declined), so your "
                "session did not start. Nothing was charged and nothing is held; please try "
                "another card.",
                "requires_action": False,
                "payment_intent_client_secret": None,
            },
        )
        # The same answer again: the decline is final for this card setup.
        again = await confirm(client, card)
        assert (again.status_code, again.json()) == (response.status_code, response.json())
        # Stripe's event for the same SetupIntent: acknowledged, the customer e-mailed once.
        body, headers = signed_event("setup_intent.succeeded", card.setup_intent, WEBHOOK_SECRET)
        hook = await client.post("/webhook/stripe", content=body, headers=headers)
        assert (hook.status_code, hook.json()) == (200, {"status": "success"})
        [told] = await mailbox.wait_for("hold_declined", to=CUSTOMER)
    assert told.subject == "Your session in pod1 did not start"
    assert await sql.fetchval("select count(*) from pod_sessions") == 0
    assert await sql.fetchval("select in_use from pods where id = $1", pod_id) is False
    intents = await payment_intents_of(stripe_client, card.customer_id)
    assert [pi["status"] for pi in intents] == ["requires_payment_method"]


async def test_a_hold_needing_authentication_starts_the_session_once_authenticated(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    localstripe_url: str,
    pod_id: int,
) -> None:
    async with running(create_app(holding(make_settings))) as client:
        card = await save_card(client, stripe_client, card=CARD_NEEDS_AUTHENTICATION)
        response = await confirm(client, card)
        hold = await hold_of(stripe_client, card.customer_id)
        assert hold["status"] == "requires_action"
        assert (response.status_code, response.json()) == (
            402,
            {
                "detail": "Your bank asks you to confirm the hold of £15.00 on your card before "
                "your session starts. Nothing has been charged.",
                "requires_action": True,
                "payment_intent_client_secret": hold["client_secret"],
            },
        )
        # What Stripe.js does once the cardholder passes 3-D Secure.
        async with httpx.AsyncClient() as http:
            done = await http.post(
                f"{localstripe_url}/v1/payment_intents/{hold['id']}/_authenticate",
                data={
                    "key": "pk_test_qwip",
                    "client_secret": hold["client_secret"],
                    "success": "true",
                },
            )
            assert done.status_code == 200, done.text
        started = await confirm(client, card)
        assert started.status_code == 200, started.text
    hold = await hold_of(stripe_client, card.customer_id)
    assert hold["status"] == "requires_capture"


async def test_below_the_minimum_the_hold_is_released(
    make_settings: SettingsFactory, stripe_client: stripe.StripeClient, pod_id: int
) -> None:
    async with running(create_app(holding(make_settings))) as client:
        card = await save_card(client, stripe_client)
        session_id = (await booking.confirm_booking(client, card))["session_id"]
        body = (await client.post("/api/end-session", json={"sessionId": session_id})).json()
    assert (body["payment_status"], body["charged"]) == ("not_charged", False)
    assert {k: body[k] for k in hold_fields(0, 0, 0)} == hold_fields(HELD, 0, HELD)
    [hold] = await payment_intents_of(stripe_client, card.customer_id)
    assert hold["status"] == "canceled"


async def test_above_the_hold_the_whole_hold_is_captured_and_the_rest_charged(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    pod_id: int,
) -> None:
    # One minute held: £0.25, and the minimum charge is 30p.
    async with running(create_app(make_settings(HOLD_MINUTES=1))) as client:
        card, session_id = await book(client, stripe_client)
        await ended_after(sql, session_id, 630)
        body = (await client.post("/api/end-session", json={"sessionId": str(session_id)})).json()
    assert (body["payment_status"], body["final_cost_pence"]) == ("succeeded", 263)
    assert {k: body[k] for k in hold_fields(0, 0, 0)} == hold_fields(30, 30, 0)
    intents = await payment_intents_of(stripe_client, card.customer_id)
    assert sorted((pi["capture_method"], pi["amount"], pi["status"]) for pi in intents) == [
        ("automatic_async", 233, "succeeded"),
        ("manual", 30, "succeeded"),
    ]


async def test_a_pod_taken_meanwhile_releases_the_hold_at_once(
    make_settings: SettingsFactory, stripe_client: stripe.StripeClient, pod_id: int
) -> None:
    async with running(create_app(holding(make_settings))) as client:
        first = await save_card(client, stripe_client)
        second = await save_card(client, stripe_client)
        await booking.confirm_booking(client, first)
        taken = await confirm(client, second)
        assert taken.status_code == 409
    assert (await hold_of(stripe_client, second.customer_id))["status"] == "canceled"
    assert (await hold_of(stripe_client, first.customer_id))["status"] == "requires_capture"


@pytest.mark.parametrize(
    ("out_of_service", "reason"),
    [("disabled", "cleaning until 3 pm"), ("lock offline", "its door lock is offline")],
)
async def test_a_pod_out_of_service_after_the_card_was_saved_starts_nothing(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    db: PostgresDatabase,
    mailbox: Mailbox,
    pod_id: int,
    out_of_service: str,
    reason: str,
) -> None:
    """The card saved, then the pod out of service (the operator's word, or its lock offline)
    before the session starts: nothing starts, for good, the hold is released at once, and
    the customer is told why, once."""
    async with running(create_app(holding(make_settings))) as client:
        card = await save_card(client, stripe_client)
        if out_of_service == "disabled":
            assert await db.set_pod_disabled("pod1", reason=reason) is True
        else:
            await sql.execute(
                "update pods set seam_device_id = 'lock_1', lock_online = false where id = $1",
                pod_id,
            )
        refused = await confirm(client, card)
        answer = (
            409,
            {
                "detail": f"Pod 'pod1' is out of service: {reason}. Nothing was charged; please "
                "choose another pod."
            },
        )
        assert (refused.status_code, refused.json()) == answer
        # Stripe's event for the same SetupIntent, and the page again: the same, for good.
        body, headers = signed_event("setup_intent.succeeded", card.setup_intent, WEBHOOK_SECRET)
        hook = await client.post("/webhook/stripe", content=body, headers=headers)
        assert (hook.status_code, hook.json()) == (200, {"status": "duplicate"})
        again = await confirm(client, card)
        assert (again.status_code, again.json()) == answer
        [told] = await mailbox.wait_for("pod_unavailable", to=CUSTOMER)
        await asyncio.sleep(0.5)
    assert told.subject == "pod1 is out of service"
    assert f"pod1 went out of service ({reason}) just after you saved your card" in told.text
    assert len(mailbox.messages("pod_unavailable")) == 1
    assert await sql.fetchval("select count(*) from pod_sessions") == 0
    assert (
        await sql.fetchval(
            "select outcome from setup_intent_outcomes where setup_intent_id = $1",
            card.setup_intent_id,
        )
        == "pod_unavailable"
    )
    assert await sql.fetchval("select in_use from pods where id = $1", pod_id) is False
    assert (await hold_of(stripe_client, card.customer_id))["status"] == "canceled"


async def test_an_abandoned_hold_is_released_by_the_background_round(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    pod_id: int,
) -> None:
    settings = holding(make_settings, HOLD_ABANDON_MINUTES=0.01)
    async with running(create_app(settings)) as client:
        card = await save_card(client, stripe_client, card=CARD_NEEDS_AUTHENTICATION)
        assert (await confirm(client, card)).status_code == 402
        for _ in range(100):
            if (await hold_of(stripe_client, card.customer_id))["status"] == "canceled":
                break
            await asyncio.sleep(0.1)
        assert (await hold_of(stripe_client, card.customer_id))["status"] == "canceled"
        late = await confirm(client, card)
    assert (late.status_code, late.json()) == (
        409,
        {
            "detail": "The hold on your card for this booking was released (it was not "
            "confirmed in time), so the session did not start. You have not been charged. "
            "Please book again."
        },
    )
    assert await sql.fetchval("select state from card_holds") == "canceled"
    assert await sql.fetchval("select count(*) from pod_sessions") == 0


async def test_stripe_down_at_the_capture_is_503_and_the_retry_captures_once(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    pod_id: int,
) -> None:
    async with running(create_app(holding(make_settings))) as client:
        card, session_id = await book(client, stripe_client)
    await ended_after(sql, session_id, 630)
    assert await end_while_stripe_is_down(make_settings, session_id) == 503
    await asyncio.sleep(1.1)  # a later retry must not capture the extra time
    async with running(create_app(holding(make_settings))) as client:
        body = (await client.post("/api/end-session", json={"sessionId": str(session_id)})).json()
        again = (await client.post("/api/end-session", json={"sessionId": str(session_id)})).json()
    assert body == again
    assert (body["payment_status"], body["final_cost_pence"]) == ("succeeded", 263)
    [hold] = await payment_intents_of(stripe_client, card.customer_id)
    assert hold["status"] == "succeeded"
    assert await refunded(stripe_client, hold["latest_charge"]) == HELD - 263


async def test_the_capture_event_before_our_record_settles_the_session_the_same(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    pod_id: int,
) -> None:
    async with running(create_app(holding(make_settings))) as client:
        card, session_id = await book(client, stripe_client)
    await ended_after(sql, session_id, 630)
    assert await end_while_stripe_is_down(make_settings, session_id) == 503
    # Our capture reached Stripe, and its event arrives before the retry records it.
    hold = await hold_of(stripe_client, card.customer_id)
    captured = await stripe_client.v1.payment_intents.capture_async(
        hold["id"], params={"amount_to_capture": 263}
    )
    body, headers = signed_event("payment_intent.succeeded", captured.to_dict(), WEBHOOK_SECRET)
    async with running(create_app(holding(make_settings))) as client:
        hook = await client.post("/webhook/stripe", content=body, headers=headers)
        assert (hook.status_code, hook.json()) == (200, {"status": "success"})
        again = await client.post("/webhook/stripe", content=body, headers=headers)
        assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
        ended = (await client.post("/api/end-session", json={"sessionId": str(session_id)})).json()
    assert (ended["payment_status"], ended["final_cost_pence"]) == ("succeeded", 263)
    assert {k: ended[k] for k in hold_fields(0, 0, 0)} == hold_fields(HELD, 263, HELD - 263)


async def test_the_capture_event_after_our_record_changes_nothing(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    pod_id: int,
) -> None:
    async with running(create_app(holding(make_settings))) as client:
        card, session_id = await book(client, stripe_client)
        await ended_after(sql, session_id, 630)
        ended = (await client.post("/api/end-session", json={"sessionId": str(session_id)})).json()
        hold = await hold_of(stripe_client, card.customer_id)
        body, headers = signed_event("payment_intent.succeeded", hold, WEBHOOK_SECRET)
        hook = await client.post("/webhook/stripe", content=body, headers=headers)
        assert (hook.status_code, hook.json()) == (200, {"status": "success"})
        after = (await client.get(f"/api/end-session-preview?sessionId={session_id}")).json()
    assert (after["payment_status"], after["captured_pence"]) == ("succeeded", 263)
    assert ended["captured_pence"] == 263
