"""Paying an owed session on the pay page's API, against Postgres, localstripe and SMTP."""

import asyncio
import re
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
import stripe

from svc.database_accessor import PostgresDatabase
from svc.models.records import NewPod
from tests.support import booking
from tests.support.mail import Mailbox
from tests.support.settings import WEBHOOK_SECRET
from tests.support.stripe_helpers import (
    CARD_DECLINED_AT_CHARGE,
    CARD_NEEDS_AUTHENTICATION,
    CARD_OK,
    confirm_card,
    payment_intents_of,
    signed_event,
)

CUSTOMER = "ada@example.com"


@pytest.fixture
async def pod1(db: PostgresDatabase) -> int:
    pod = await db.insert_pod(
        NewPod(name="pod1", address="1 Demo Street, London", price=Decimal("0.25"), currency="gbp")
    )
    return pod.id


async def owed_session(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    *,
    card: str = CARD_DECLINED_AT_CHARGE,
) -> tuple[booking.SavedCard, UUID]:
    """A 10-minute session at pod1 (£2.50) whose charge failed (or needs authentication)."""
    saved = await booking.save_card(client, stripe_client, pod="pod1", email=CUSTOMER, card=card)
    session_id = UUID((await booking.confirm_booking(client, saved))["session_id"])
    await sql.execute(
        "update pod_sessions set start_time = now() - interval '600 seconds' where id = $1",
        session_id,
    )
    ended = (await client.post("/api/end-session", json={"sessionId": str(session_id)})).json()
    assert ended["payment_status"] in ("failed", "requires_action")
    return saved, session_id


async def another_card(
    client: httpx.AsyncClient, stripe_client: stripe.StripeClient, session_id: UUID, card: str
) -> str:
    """What the pay page does for a card other than the saved one; its SetupIntent id."""
    response = await client.post("/api/pay-session-card", json={"sessionId": str(session_id)})
    assert response.status_code == 200, response.text
    setup = response.json()
    assert set(setup) == {"setup_intent_id", "client_secret"}
    confirmed = await confirm_card(stripe_client, setup["setup_intent_id"], card=card, email=None)
    assert confirmed["status"] == "succeeded"
    return str(setup["setup_intent_id"])


def paid(session_id: UUID, payment_intent_id: str) -> dict[str, Any]:
    return {
        "session_id": str(session_id),
        "status": "succeeded",
        "amount": "2.50",
        "amount_pence": 250,
        "currency": "gbp",
        "payment_intent_id": payment_intent_id,
        "client_secret": None,
        "error": None,
    }


def succeeded(intents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [intent for intent in intents if intent["status"] == "succeeded"]


async def test_an_owed_session_paid_with_another_card_is_paid_once_with_one_receipt(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    saved, session_id = await owed_session(client, stripe_client, sql)
    [failed_mail] = await mailbox.wait_for("payment_failed")
    link = f"http://qwip.test/pay?sessionId={session_id}"
    assert f"Pay £2.50 now: {link}" in failed_mail.text
    assert "Until it is paid, you cannot book a new session." in failed_mail.text
    assert f'<a href="{link}">Pay £2.50 now</a>' in failed_mail.html

    setup_intent_id = await another_card(client, stripe_client, session_id, CARD_OK)
    response = await client.post(
        "/api/pay-session", json={"sessionId": str(session_id), "setupIntentId": setup_intent_id}
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer == paid(session_id, answer["payment_intent_id"])
    intent = await stripe_client.v1.payment_intents.retrieve_async(answer["payment_intent_id"])
    assert (intent.amount, intent.metadata.to_dict()) == (
        250,
        {"session_id": str(session_id), "purpose": "recovery", "attempt": "1"},
    )
    row = await sql.fetchrow("select * from pod_sessions where id = $1", session_id)
    assert (row["payment_status"], row["payment_intent_id"], row["payment_error"]) == (
        "succeeded",
        answer["payment_intent_id"],
        None,
    )
    [receipt] = await mailbox.wait_for("receipt")
    assert receipt.recipients == [CUSTOMER]
    assert "Paid: £2.50 on the payment page, after the charge to your saved card" in receipt.text

    # Stripe's event for the same payment, and the page asking again: nothing more.
    body, headers = signed_event("payment_intent.succeeded", intent.to_dict(), WEBHOOK_SECRET)
    event = await client.post("/webhook/stripe", content=body, headers=headers)
    assert (event.status_code, event.json()) == (200, {"status": "success"})
    again = await client.post("/webhook/stripe", content=body, headers=headers)
    assert again.json() == {"status": "duplicate"}
    confirmation = await client.post(
        "/api/pay-session",
        json={"sessionId": str(session_id), "paymentIntentId": answer["payment_intent_id"]},
    )
    assert confirmation.json() == paid(session_id, answer["payment_intent_id"])
    receipts = await sql.fetchval(
        "select count(*) from email_outbox where kind = 'receipt' and recipient = $1", CUSTOMER
    )
    assert receipts == 1
    assert len(succeeded(await payment_intents_of(stripe_client, saved.customer_id))) == 1

    nothing = await client.post("/api/pay-session", json={"sessionId": str(session_id)})
    assert (nothing.status_code, nothing.json()) == (
        409,
        {"detail": "Nothing is owed for this session: it is paid."},
    )


async def test_a_declined_attempt_is_followed_by_a_new_one_with_another_card(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    saved, session_id = await owed_session(client, stripe_client, sql)
    declined = await client.post("/api/pay-session", json={"sessionId": str(session_id)})
    assert declined.status_code == 200
    first = declined.json()
    assert first == {
        "session_id": str(session_id),
        "status": "failed",
        "amount": "2.50",
        "amount_pence": 250,
        "currency": "gbp",
        "payment_intent_id": first["payment_intent_id"],
        "client_secret": None,
        "error": "Your card was declined.",
    }
    setup_intent_id = await another_card(client, stripe_client, session_id, CARD_OK)
    second = (
        await client.post(
            "/api/pay-session",
            json={"sessionId": str(session_id), "setupIntentId": setup_intent_id},
        )
    ).json()
    assert second == paid(session_id, second["payment_intent_id"])
    assert second["payment_intent_id"] != first["payment_intent_id"]
    recovery = [
        intent
        for intent in await payment_intents_of(stripe_client, saved.customer_id)
        if intent["metadata"].get("purpose") == "recovery"
    ]
    assert sorted((i["metadata"]["attempt"], i["status"]) for i in recovery) == [
        ("1", "requires_payment_method"),
        ("2", "succeeded"),
    ]
    await mailbox.wait_for("receipt")


async def test_the_webhook_marks_paid_after_the_bank_authenticates_and_the_page_finds_it_done(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    localstripe_url: str,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    saved, session_id = await owed_session(
        client, stripe_client, sql, card=CARD_NEEDS_AUTHENTICATION
    )
    asked = (await client.post("/api/pay-session", json={"sessionId": str(session_id)})).json()
    assert asked["status"] == "requires_action"
    assert asked["client_secret"].startswith(f"{asked['payment_intent_id']}_secret_")
    assert (asked["amount_pence"], asked["error"]) == (250, None)
    # The same link again, before the bank's window is done: the same PaymentIntent.
    same = (await client.post("/api/pay-session", json={"sessionId": str(session_id)})).json()
    assert same == asked

    # What Stripe.js's confirmCardPayment does once the cardholder completes it.
    async with httpx.AsyncClient() as http:
        done = await http.post(
            f"{localstripe_url}/v1/payment_intents/{asked['payment_intent_id']}/_authenticate",
            params={"success": "true"},
            json={"key": "pk_test_qwip", "client_secret": asked["client_secret"]},
        )
    assert done.json()["status"] == "succeeded"
    intent = await stripe_client.v1.payment_intents.retrieve_async(asked["payment_intent_id"])
    body, headers = signed_event("payment_intent.succeeded", intent.to_dict(), WEBHOOK_SECRET)
    event = await client.post("/webhook/stripe", content=body, headers=headers)
    assert event.json() == {"status": "success"}
    status = await sql.fetchval("select payment_status from pod_sessions where id = $1", session_id)
    assert status == "succeeded"
    confirmation = await client.post(
        "/api/pay-session",
        json={"sessionId": str(session_id), "paymentIntentId": asked["payment_intent_id"]},
    )
    assert confirmation.json() == paid(session_id, asked["payment_intent_id"])
    [receipt] = await mailbox.wait_for("receipt")
    assert "Paid: £2.50 on the payment page" in receipt.text
    assert await sql.fetchval("select count(*) from email_outbox where kind = 'receipt'") == 1
    assert len(succeeded(await payment_intents_of(stripe_client, saved.customer_id))) == 1


async def test_a_pay_link_used_twice_at_once_charges_once(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    saved, session_id = await owed_session(client, stripe_client, sql)
    setup_intent_id = await another_card(client, stripe_client, session_id, CARD_OK)
    body = {"sessionId": str(session_id), "setupIntentId": setup_intent_id}
    answers = await asyncio.gather(*(client.post("/api/pay-session", json=body) for _ in range(2)))
    assert [answer.status_code for answer in answers] == [200, 200]
    [first, second] = [answer.json() for answer in answers]
    assert first == second == paid(session_id, first["payment_intent_id"])
    assert len(succeeded(await payment_intents_of(stripe_client, saved.customer_id))) == 1
    await mailbox.wait_for("receipt")
    assert await sql.fetchval("select count(*) from email_outbox where kind = 'receipt'") == 1


async def test_nothing_owed_unknown_sessions_and_bad_input_are_refused(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    saved = await booking.save_card(client, stripe_client, pod="pod1", email=CUSTOMER)
    session_id = (await booking.confirm_booking(client, saved))["session_id"]
    still_open = await client.post("/api/pay-session", json={"sessionId": session_id})
    assert (still_open.status_code, still_open.json()) == (
        409,
        {
            "detail": "Nothing is owed yet: this session is still open, and its card is "
            "charged when it ends."
        },
    )
    card = await client.post("/api/pay-session-card", json={"sessionId": session_id})
    assert card.status_code == 409
    unknown = await client.post("/api/pay-session", json={"sessionId": str(uuid4())})
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "No session with this id."})
    malformed = await client.post("/api/pay-session", json={"sessionId": "nope"})
    assert malformed.status_code == 422
    assert malformed.json()["detail"].startswith("sessionId (body): Input should be a valid UUID")
    foreign = await client.post(
        "/api/pay-session", json={"sessionId": session_id, "paymentIntentId": "pi_notours"}
    )
    assert (foreign.status_code, foreign.json()) == (
        422,
        {"detail": "This payment is not one made to pay this session."},
    )
    row = await sql.fetchrow("select * from pod_sessions where id = $1", UUID(session_id))
    assert (row["recovery_attempt"], row["end_time"]) == (0, None)


async def test_a_setup_intent_of_another_session_cannot_pay_this_one(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    _, session_id = await owed_session(client, stripe_client, sql)
    saved = await booking.save_card(client, stripe_client, pod="pod1", email="bo@example.com")
    refused = await client.post(
        "/api/pay-session",
        json={"sessionId": str(session_id), "setupIntentId": saved.setup_intent_id},
    )
    assert (refused.status_code, refused.json()) == (
        422,
        {"detail": "This card setup is not one made to pay this session."},
    )
    status = await sql.fetchval("select payment_status from pod_sessions where id = $1", session_id)
    assert status == "failed"


# The pay page, as the server renders it (what it does in a browser: tests/browser/)


async def test_the_pay_page_shows_the_pod_the_times_and_the_amount_owed(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    localstripe_url: str,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    _, session_id = await owed_session(client, stripe_client, sql)
    response = await client.get(f"/pay?sessionId={session_id}")
    assert response.status_code == 200
    text = response.text
    assert "<h1>pod1</h1>" in text
    assert '<p class="pod-address">1 Demo Street, London</p>' in text
    assert '<div class="fact"><dt>Amount owed</dt><dd id="owed">£2.50</dd></div>' in text
    assert "<dt>Started</dt>" in text and "<dt>Ended</dt>" in text
    assert '<button type="button" class="button" id="pay-saved">' in text
    assert (
        f'<script defer src="{localstripe_url}/js.stripe.com/v3/"></script>'
        '<script type="module" src="/static/pay.js"></script>'
    ) in text
    # As the booking page: the service and the Stripe origin in use, never cached.
    assert response.headers["content-security-policy"] == (
        f"default-src 'self'; script-src 'self' {localstripe_url}; "
        f"connect-src 'self' {localstripe_url}; frame-src {localstripe_url}; "
        "style-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "same-origin"
    assert re.search(r"<script[^>]*>[^<]", text) is None
    assert re.search(r"<[^>]+\s(on[a-z]+|style)=", text) is None
    # The end page of the failed payment leads here.
    end_page = (await client.get(f"/end-session?sessionId={session_id}")).text
    assert (
        f'<p id="receipt-pay">\n    <a class="button" href="/pay?sessionId={session_id}">'
        "Pay what is owed</a></p>"
    ) in end_page


async def test_the_pay_page_of_a_paid_or_unknown_session_says_so(
    client: httpx.AsyncClient, stripe_client: stripe.StripeClient, pod1: int
) -> None:
    saved = await booking.save_card(client, stripe_client, pod="pod1", email=CUSTOMER)
    session_id = (await booking.confirm_booking(client, saved))["session_id"]
    await client.post("/api/end-session", json={"sessionId": session_id})
    response = await client.get(f"/pay?sessionId={session_id}")
    assert response.status_code == 200
    assert "<p>Nothing is owed for this session: it cost less than the minimum charge.</p>" in (
        response.text
    )
    assert "pay.js" not in response.text and "js.stripe.com" not in response.text
    assert response.headers["content-security-policy"].startswith(
        "default-src 'self'; script-src 'self'; connect-src 'self'; frame-src 'none';"
    )
    end_page = (await client.get(f"/end-session?sessionId={session_id}")).text
    assert '<p id="receipt-pay" hidden>' in end_page
    unknown = await client.get(f"/pay?sessionId={uuid4()}")
    assert unknown.status_code == 404
    assert "Session not found" in unknown.text
    assert (await client.get("/pay?sessionId=nope")).status_code == 404


# Debt stops new bookings


def debt_refusal(session_id: UUID) -> dict[str, str]:
    return {
        "detail": "You owe £2.50 for an earlier session whose payment did not go through, so "
        "a new session cannot start. Nothing was charged or held for this booking. Pay what "
        "is owed, then book again.",
        "pay_url": f"http://qwip.test/pay?sessionId={session_id}",
    }


async def test_a_card_setup_by_an_email_that_owes_is_refused_with_the_pay_link(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    _, session_id = await owed_session(client, stripe_client, sql)
    attempts = await sql.fetchval("select count(*) from booking_attempts")
    refused = await client.post(
        "/api/create-setup-intent", json={"podName": "pod1", "email": "ADA@Example.COM"}
    )
    assert (refused.status_code, refused.json()) == (409, debt_refusal(session_id))
    # Nothing was counted against the booking limits, nothing made at Stripe.
    assert await sql.fetchval("select count(*) from booking_attempts") == attempts
    other = await client.post(
        "/api/create-setup-intent", json={"podName": "pod1", "email": "bo@example.com"}
    )
    assert other.status_code == 200


async def test_a_card_that_owes_saved_under_another_email_starts_nothing_and_is_told(
    make_settings: Any,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    from svc.main import create_app
    from tests.integration.conftest import running

    # Holds on: the refusal comes before the hold, so nothing is held either.
    async with running(create_app(make_settings(HOLD_MINUTES=60))) as client:
        saved = await booking.save_card(
            client, stripe_client, pod="pod1", email=CUSTOMER, card=CARD_NEEDS_AUTHENTICATION
        )
        # The hold asked for authentication; what Stripe.js does, then the page again.
        started = await client.post(
            "/api/confirm-booking",
            json={"setup_intent_id": saved.setup_intent_id, "client_secret": saved.client_secret},
        )
        assert started.status_code == 402
        hold = started.json()["payment_intent_client_secret"]
        async with httpx.AsyncClient() as http:
            await http.post(
                f"{client_base(stripe_client)}/v1/payment_intents/{hold.split('_secret_')[0]}"
                "/_authenticate",
                params={"success": "true"},
                json={"key": "pk_test_qwip", "client_secret": hold},
            )
        session_id = UUID((await booking.confirm_booking(client, saved))["session_id"])
    # Without a hold, this card's charge at the end needs the cardholder: owed.
    async with running(create_app(make_settings())) as client:
        await sql.execute(
            "update pod_sessions set start_time = now() - interval '600 seconds', "
            "hold_payment_intent_id = null, hold_pence = null where id = $1",
            session_id,
        )
        await client.post("/api/end-session", json={"sessionId": str(session_id)})
    assert await sql.fetchval(
        "select payment_status from pod_sessions where id = $1", session_id
    ) == ("requires_action")
    mailbox.clear()

    async with running(create_app(make_settings(HOLD_MINUTES=60))) as client:
        again = await booking.save_card(
            client,
            stripe_client,
            pod="pod1",
            email="bo@example.com",
            card=CARD_NEEDS_AUTHENTICATION,
        )
        refused = await client.post(
            "/api/confirm-booking",
            json={"setup_intent_id": again.setup_intent_id, "client_secret": again.client_secret},
        )
        assert (refused.status_code, refused.json()) == (409, debt_refusal(session_id))
        body, headers = signed_event(
            "setup_intent.succeeded", {"id": again.setup_intent_id}, WEBHOOK_SECRET
        )
        event = await client.post("/webhook/stripe", content=body, headers=headers)
        assert event.json() == {"status": "success"}
        [told] = await mailbox.wait_for("debt_outstanding")
    assert told.recipients == ["bo@example.com"]
    assert told.subject == "pod1 did not start: £2.50 is owed"
    assert f"Pay £2.50 now: http://qwip.test/pay?sessionId={session_id}" in told.text
    assert "Nothing was charged or held on your card for this booking." in told.text
    assert await sql.fetchval("select count(*) from pod_sessions") == 1
    assert await payment_intents_of(stripe_client, again.customer_id) == []
    assert (
        await sql.fetchval(
            "select count(*) from card_holds where setup_intent_id = $1", again.setup_intent_id
        )
        == 0
    )


def client_base(stripe_client: stripe.StripeClient) -> str:
    return str(stripe_client._requestor.base_addresses["api"])  # type: ignore[attr-defined]


async def test_after_paying_the_customer_books_again(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    _, session_id = await owed_session(client, stripe_client, sql)
    setup_intent_id = await another_card(client, stripe_client, session_id, CARD_OK)
    await client.post(
        "/api/pay-session", json={"sessionId": str(session_id), "setupIntentId": setup_intent_id}
    )
    saved = await booking.save_card(
        client, stripe_client, pod="pod1", email=CUSTOMER, card=CARD_DECLINED_AT_CHARGE
    )
    booked = await booking.confirm_booking(client, saved)
    assert booked["pod_name"] == "pod1"


async def test_a_card_saved_on_the_pay_page_books_nothing(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    pod1: int,
) -> None:
    _, session_id = await owed_session(client, stripe_client, sql)
    setup_intent_id = await another_card(client, stripe_client, session_id, CARD_OK)
    body, headers = signed_event("setup_intent.succeeded", {"id": setup_intent_id}, WEBHOOK_SECRET)
    event = await client.post("/webhook/stripe", content=body, headers=headers)
    assert event.json() == {"status": "ignored"}
    setup = await stripe_client.v1.setup_intents.retrieve_async(setup_intent_id)
    page = await client.post(
        "/api/confirm-booking",
        json={"setup_intent_id": setup_intent_id, "client_secret": setup.client_secret},
    )
    assert (page.status_code, page.json()) == (
        409,
        {"detail": "This card setup pays an owed session; it books nothing."},
    )
    assert await sql.fetchval("select count(*) from pod_sessions") == 1
    # No "card saved for an unknown pod" alert: it is the pay page's, not a booking.
    kinds = await sql.fetch("select kind from email_outbox order by id")
    assert [row["kind"] for row in kinds] == [
        "access_code",
        "payment_failed",
        "payment_failed_operator",
    ]
