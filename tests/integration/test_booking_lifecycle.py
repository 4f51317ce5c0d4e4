"""The whole booking lifecycle over HTTP, against Postgres, localstripe and an SMTP server."""

import asyncio
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
import stripe
from fastapi import FastAPI

from svc.database_accessor import PostgresDatabase
from svc.email_manager import pod_unavailable_email
from svc.main import create_app
from svc.models.records import NewPod
from tests.conftest import free_port
from tests.integration.conftest import SettingsFactory, running
from tests.support import booking
from tests.support.booking import SavedCard
from tests.support.mail import Mailbox, start_smtp_server
from tests.support.settings import OPERATOR, WEBHOOK_SECRET
from tests.support.stripe_helpers import (
    CARD_DECLINED_AT_CHARGE,
    CARD_NEEDS_AUTHENTICATION,
    card_saved_outside_the_service,
    payment_intents_of,
    sign,
    signed_event,
)

CUSTOMER = "ada@example.com"


@pytest.fixture
async def pod_ids(db: PostgresDatabase) -> dict[str, int]:
    pod1 = await db.insert_pod(
        NewPod(name="pod1", address="1 Demo Street, London", price=Decimal("0.25"), currency="gbp")
    )
    other = await db.insert_pod(
        NewPod(name="pod2", address="2 Side Road", price=Decimal("0.10"), currency="gbp")
    )
    return {"pod1": pod1.id, "pod2": other.id}


async def save_card(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    *,
    pod: str = "pod1",
    email: str | None = CUSTOMER,
    **kw: Any,
) -> SavedCard:
    """The booking page up to the confirmed card, by CUSTOMER at pod1 unless told."""
    return await booking.save_card(client, stripe_client, pod=pod, email=email, **kw)


async def deliver(
    client: httpx.AsyncClient, event_type: str, obj: dict[str, Any], **kw: Any
) -> httpx.Response:
    body, headers = signed_event(event_type, obj, WEBHOOK_SECRET, **kw)
    return await client.post("/webhook/stripe", content=body, headers=headers)


async def book(
    client: httpx.AsyncClient, stripe_client: stripe.StripeClient, **kw: Any
) -> tuple[SavedCard, UUID]:
    card = await save_card(client, stripe_client, **kw)
    booked = await booking.confirm_booking(client, card)
    return card, UUID(booked["session_id"])


async def started_minutes_ago(sql: asyncpg.Connection, session_id: UUID, seconds: int) -> None:
    await sql.execute(
        "update pod_sessions set start_time = now() - make_interval(secs => $2) where id = $1",
        session_id,
        seconds,
    )


async def test_whole_flow_from_card_to_receipt(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod_ids: dict[str, int],
) -> None:
    card = await save_card(client, stripe_client)
    assert card.setup_intent["metadata"] == {"pod_id": str(pod_ids["pod1"]), "pod_name": "pod1"}
    assert card.setup_intent["usage"] == "off_session"
    customer = await stripe_client.v1.customers.retrieve_async(card.customer_id)
    assert customer.email == CUSTOMER

    webhook = await deliver(client, "setup_intent.succeeded", card.setup_intent)
    assert (webhook.status_code, webhook.json()) == (200, {"status": "success"})

    [mail] = await mailbox.wait_for("access_code")
    assert mail.recipients == [CUSTOMER]
    assert mail.subject == "Your Qwip access code for pod1"
    code = mail.access_code()
    link = mail.end_session_link()
    session_id = UUID(link.split("sessionId=")[1])
    assert link == f"http://qwip.test/end-session?sessionId={session_id}"
    assert "Address: 1 Demo Street, London" in mail.text
    assert "Price: £0.25 per minute" in mail.text
    assert code in mail.html and link in mail.html
    row = await sql.fetchrow("select * from pod_sessions where id = $1", session_id)
    assert (row["access_code"], row["user_email"], row["setup_intent_id"]) == (
        code,
        CUSTOMER,
        card.setup_intent_id,
    )
    assert len(code) == 6 and code.isdigit()
    pod = (await client.get("/api/pod?podName=pod1")).json()
    assert pod["in_use"] is True

    await started_minutes_ago(sql, session_id, 630)  # 10 min 30 s
    preview = (await client.get(f"/api/end-session-preview?sessionId={session_id}")).json()
    assert (preview["cost_pence"], preview["cost"], preview["is_complete"]) == (263, "2.63", False)

    ended = await client.post("/api/end-session", json={"sessionId": str(session_id)})
    assert ended.status_code == 200
    result = ended.json()
    assert result == {
        "status": "success",
        "session_id": str(session_id),
        "final_cost": "2.63",
        "final_cost_pence": 263,
        "currency": "gbp",
        "charged": True,
        "payment_status": "succeeded",
        "end_time": result["end_time"],
        "error": None,
        "hold_pence": None,
        "captured_pence": None,
        "released_pence": None,
    }
    [intent] = await payment_intents_of(stripe_client, card.customer_id)
    assert (intent["amount"], intent["currency"], intent["status"]) == (263, "gbp", "succeeded")
    assert intent["payment_method"] == card.setup_intent["payment_method"]
    assert intent["metadata"] == {"session_id": str(session_id)}

    [receipt] = await mailbox.wait_for("receipt")
    assert receipt.subject == "Your Qwip receipt for pod1: £2.63"
    assert "Charged: £2.63 to your saved card." in receipt.text
    assert "(10 min 30 s)" in receipt.text
    session = await sql.fetchrow("select * from pod_sessions where id = $1", session_id)
    assert (session["payment_status"], session["cost_pence"], session["payment_intent_id"]) == (
        "succeeded",
        263,
        intent["id"],
    )
    assert (await client.get("/api/pod?podName=pod1")).json()["in_use"] is False
    final = (await client.get(f"/api/end-session-preview?sessionId={session_id}")).json()
    assert (final["cost_pence"], final["is_complete"], final["payment_status"]) == (
        263,
        True,
        "succeeded",
    )


async def test_create_setup_intent_answers_with_the_secret_and_the_alias_works(
    client: httpx.AsyncClient, stripe_client: stripe.StripeClient, pod_ids: dict[str, int]
) -> None:
    for path in ("/api/create-setup-intent", "/api/create-payment-intent"):
        response = await client.get(f"{path}?pod_name=pod2")
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"client_secret", "customer_id", "setup_intent_id"}
        assert body["client_secret"].startswith(body["setup_intent_id"] + "_secret_")
        intent = await stripe_client.v1.setup_intents.retrieve_async(body["setup_intent_id"])
        assert (intent.customer, intent.usage) == (body["customer_id"], "off_session")
        assert intent.metadata.to_dict() == {"pod_id": str(pod_ids["pod2"]), "pod_name": "pod2"}


@pytest.mark.parametrize(
    ("query", "status", "detail"),
    [
        ("podName=ghost", 404, "No pod named 'ghost'."),
        ("", 422, "Give the pod as podName (or pod_name) or podId (or pod_id)."),
        (
            "podName=pod1&email=not-an-email",
            422,
            "email (query): String should match pattern '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$'",
        ),
    ],
)
async def test_create_setup_intent_rejects_bad_requests(
    client: httpx.AsyncClient, pod_ids: dict[str, int], query: str, status: int, detail: str
) -> None:
    response = await client.get(f"/api/create-setup-intent?{query}")
    assert (response.status_code, response.json()) == (status, {"detail": detail})


async def test_create_setup_intent_for_a_pod_in_use_is_409(
    client: httpx.AsyncClient, stripe_client: stripe.StripeClient, pod_ids: dict[str, int]
) -> None:
    await book(client, stripe_client)
    response = await client.get("/api/create-setup-intent?podName=pod1")
    assert (response.status_code, response.json()) == (
        409,
        {"detail": "Pod 'pod1' is in use right now; please try again when it is free."},
    )


async def test_create_setup_intent_is_502_when_stripe_fails(
    make_settings: SettingsFactory, pod_ids: dict[str, int]
) -> None:
    settings = make_settings(STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}")
    async with running(create_app(settings)) as client:
        response = await client.get("/api/create-setup-intent?podName=pod1")
    assert (response.status_code, response.json()) == (
        502,
        {"detail": "The payment provider could not start the card setup; please try again."},
    )


async def test_confirm_booking_starts_the_session_once(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod_ids: dict[str, int],
) -> None:
    card = await save_card(client, stripe_client)
    body = {"setupIntentId": card.setup_intent_id, "clientSecret": card.client_secret}
    first = await client.post("/api/confirm-booking", json=body)
    again = await client.post("/api/confirm-booking", json=body)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    confirmed = first.json()
    assert set(confirmed) == {
        "session_id",
        "access_code",
        "pod_name",
        "start_time",
        "end_session_url",
    }
    assert confirmed["pod_name"] == "pod1"
    assert confirmed["end_session_url"] == (
        f"http://qwip.test/end-session?sessionId={confirmed['session_id']}"
    )
    [mail] = await mailbox.wait_for("access_code")
    assert mail.access_code() == confirmed["access_code"]
    # the webhook arriving afterwards finds the session and starts nothing new
    webhook = await deliver(client, "setup_intent.succeeded", card.setup_intent)
    assert webhook.json() == {"status": "success"}
    assert await sql.fetchval("select count(*) from pod_sessions") == 1
    await asyncio.sleep(0.5)
    assert len(mailbox.messages("access_code")) == 1


async def test_confirm_booking_refuses_a_wrong_secret_an_unknown_or_unconfirmed_setup(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    pod_ids: dict[str, int],
) -> None:
    card = await save_card(client, stripe_client)
    wrong = await client.post(
        "/api/confirm-booking",
        json={"setup_intent_id": card.setup_intent_id, "client_secret": card.client_secret + "x"},
    )
    assert (wrong.status_code, wrong.json()) == (
        403,
        {"detail": "The client secret does not belong to this card setup."},
    )
    unknown = await client.post(
        "/api/confirm-booking",
        json={"setup_intent_id": "seti_nope", "client_secret": "seti_nope_secret_x"},
    )
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "No card setup with this id."})

    pending = (await client.get("/api/create-setup-intent?podName=pod2")).json()
    unconfirmed = await client.post(
        "/api/confirm-booking",
        json={
            "setup_intent_id": pending["setup_intent_id"],
            "client_secret": pending["client_secret"],
        },
    )
    assert (unconfirmed.status_code, unconfirmed.json()) == (
        409,
        {
            "detail": "The card setup has not succeeded (its status is "
            "'requires_payment_method'); confirm the card first."
        },
    )
    missing = await client.post("/api/confirm-booking", json={"setup_intent_id": "seti_x"})
    assert (missing.status_code, missing.json()) == (
        422,
        {"detail": "client_secret (body): Field required"},
    )
    assert await sql.fetchval("select count(*) from pod_sessions") == 0


async def test_same_event_twice_starts_one_session_and_sends_one_email(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod_ids: dict[str, int],
) -> None:
    card = await save_card(client, stripe_client)
    first = await deliver(client, "setup_intent.succeeded", card.setup_intent, event_id="evt_same")
    second = await deliver(client, "setup_intent.succeeded", card.setup_intent, event_id="evt_same")
    assert (first.json(), second.json()) == ({"status": "success"}, {"status": "duplicate"})
    await mailbox.wait_for("access_code")
    await asyncio.sleep(0.5)
    assert len(mailbox.messages("access_code")) == 1
    assert await sql.fetchval("select count(*) from pod_sessions") == 1


async def test_a_taken_pod_starts_nothing_and_tells_the_second_customer(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod_ids: dict[str, int],
) -> None:
    first = await save_card(client, stripe_client, email="first@example.com")
    second = await save_card(client, stripe_client, email="second@example.com")
    assert (await deliver(client, "setup_intent.succeeded", first.setup_intent)).status_code == 200
    late = await deliver(client, "setup_intent.succeeded", second.setup_intent)
    assert (late.status_code, late.json()) == (200, {"status": "success"})
    confirm = await client.post(
        "/api/confirm-booking",
        json={"setup_intent_id": second.setup_intent_id, "client_secret": second.client_secret},
    )
    assert (confirm.status_code, confirm.json()) == (
        409,
        {
            "detail": "Pod 'pod1' was taken by someone else moments ago, so your session did "
            "not start. You have not been charged."
        },
    )
    [sorry] = await mailbox.wait_for("pod_unavailable")
    assert sorry.recipients == ["second@example.com"]
    assert "You have not been charged." in sorry.text
    await asyncio.sleep(0.5)
    assert len(mailbox.messages("pod_unavailable")) == 1
    assert await sql.fetchval("select count(*) from pod_sessions") == 1
    assert await payment_intents_of(stripe_client, second.customer_id) == []


async def test_email_comes_from_the_card_when_the_customer_has_none(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    pod_ids: dict[str, int],
) -> None:
    await book(client, stripe_client, email=None, card_email="card@example.com")
    [mail] = await mailbox.wait_for("access_code")
    assert mail.recipients == ["card@example.com"]


async def test_a_declined_charge_ends_the_session_and_tells_both(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod_ids: dict[str, int],
) -> None:
    card, session_id = await book(client, stripe_client, card=CARD_DECLINED_AT_CHARGE)
    await started_minutes_ago(sql, session_id, 600)
    response = await client.post("/api/end-session", json={"session_id": str(session_id)})
    assert response.status_code == 200
    result = response.json()
    assert result == {
        "status": "failed",
        "session_id": str(session_id),
        "final_cost": "2.50",
        "final_cost_pence": 250,
        "currency": "gbp",
        "charged": False,
        "payment_status": "failed",
        "end_time": result["end_time"],
        "error": "card_declined: Your card was declined.",
        "hold_pence": None,
        "captured_pence": None,
        "released_pence": None,
    }
    assert (await client.get("/api/pod?podName=pod1")).json()["in_use"] is False
    [customer_mail] = await mailbox.wait_for("payment_failed")
    [operator_mail] = await mailbox.wait_for("payment_failed_operator")
    assert customer_mail.recipients == [CUSTOMER]
    assert "the charge of £2.50 to your saved card did not go through" in customer_mail.text
    assert operator_mail.recipients == [OPERATOR]
    assert operator_mail.subject == "Payment failed: £2.50 owed for pod1"
    assert str(session_id) in operator_mail.text
    assert "Amount owed: £2.50" in operator_mail.text
    assert (
        "What happens next: the customer was e-mailed a link to pay it on-session "
        f"(http://qwip.test/pay?sessionId={session_id})" in operator_mail.text
    )
    assert "no new booking starts with this e-mail address or this card" in operator_mail.text
    assert mailbox.messages("receipt") == []
    row = await sql.fetchrow("select * from pod_sessions where id = $1", session_id)
    assert (row["cost_pence"], row["payment_status"]) == (250, "failed")
    # calling again charges nothing more and answers the same
    again = await client.post("/api/end-session", json={"session_id": str(session_id)})
    assert again.json() == result
    assert len(await payment_intents_of(stripe_client, card.customer_id)) == 1


async def test_a_charge_needing_authentication_has_a_clear_outcome(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod_ids: dict[str, int],
) -> None:
    card, session_id = await book(client, stripe_client, card=CARD_NEEDS_AUTHENTICATION)
    await started_minutes_ago(sql, session_id, 600)
    result = (await client.post("/api/end-session", json={"sessionId": str(session_id)})).json()
    assert (result["status"], result["payment_status"], result["charged"]) == (
        "failed",
        "requires_action",
        False,
    )
    assert result["error"] == (
        "authentication_required: the bank asks the cardholder to confirm this payment"
    )
    assert (await client.get("/api/pod?podName=pod1")).json()["in_use"] is False
    await mailbox.wait_for("payment_failed")
    await mailbox.wait_for("payment_failed_operator")
    [intent] = await payment_intents_of(stripe_client, card.customer_id)
    assert intent["status"] == "requires_action"


async def test_below_the_minimum_charge_nothing_is_charged(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod_ids: dict[str, int],
) -> None:
    card, session_id = await book(client, stripe_client)
    await started_minutes_ago(sql, session_id, 60)  # 25p < 30p
    result = (await client.post("/api/end-session", json={"sessionId": str(session_id)})).json()
    assert (result["status"], result["payment_status"], result["charged"]) == (
        "success",
        "not_charged",
        False,
    )
    assert result["final_cost_pence"] == 25
    assert await payment_intents_of(stripe_client, card.customer_id) == []
    [receipt] = await mailbox.wait_for("receipt")
    assert "Not charged: £0.25 is below our minimum charge of £0.30." in receipt.text


async def test_ending_many_times_at_once_charges_once(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod_ids: dict[str, int],
) -> None:
    card, session_id = await book(client, stripe_client)
    await started_minutes_ago(sql, session_id, 630)
    responses = await asyncio.gather(
        *(client.post("/api/end-session", json={"sessionId": str(session_id)}) for _ in range(8))
    )
    results = [r.json() for r in responses]
    assert {r.status_code for r in responses} == {200}
    assert {(r["final_cost_pence"], r["payment_status"], r["end_time"]) for r in results} == {
        (263, "succeeded", results[0]["end_time"])
    }
    later = (await client.post("/api/end-session", json={"sessionId": str(session_id)})).json()
    assert later == results[0]
    assert len(await payment_intents_of(stripe_client, card.customer_id)) == 1
    await mailbox.wait_for("receipt")
    await asyncio.sleep(0.5)
    assert len(mailbox.messages("receipt")) == 1


async def test_stripe_down_at_the_end_is_503_and_the_retry_charges_the_first_amount(
    app: FastAPI,
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    pod_ids: dict[str, int],
) -> None:
    async with running(app) as client:
        card, session_id = await book(client, stripe_client)
    await started_minutes_ago(sql, session_id, 630)
    outage = make_settings(STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}")
    async with running(create_app(outage)) as down:
        response = await down.post("/api/end-session", json={"sessionId": str(session_id)})
    assert (response.status_code, response.json()) == (
        503,
        {
            "detail": "The payment provider cannot be reached right now; nothing was charged. "
            "Please try again in a minute."
        },
    )
    # Nothing recorded but the end (the cost follows from it), and the lease let go.
    row = await sql.fetchrow("select * from pod_sessions where id = $1", session_id)
    assert (row["payment_status"], row["cost_pence"], row["charge_locked_until"]) == (
        "pending",
        None,
        None,
    )
    assert row["end_time"] is not None
    first_end = row["end_time"]
    await asyncio.sleep(1.1)  # a later retry must not bill the extra time
    async with running(app) as client:
        retried = (
            await client.post("/api/end-session", json={"sessionId": str(session_id)})
        ).json()
    assert (retried["payment_status"], retried["final_cost_pence"]) == ("succeeded", 263)
    assert await sql.fetchval("select end_time from pod_sessions where id = $1", session_id) == (
        first_end
    )
    [intent] = await payment_intents_of(stripe_client, card.customer_id)
    assert intent["amount"] == 263


async def test_unsettled_charges_are_retried_in_the_background(
    app: FastAPI,
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod_ids: dict[str, int],
) -> None:
    async with running(app) as client:
        card, session_id = await book(client, stripe_client)
    await started_minutes_ago(sql, session_id, 630)
    outage = make_settings(STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}")
    async with running(create_app(outage)) as down:
        assert (
            await down.post("/api/end-session", json={"sessionId": str(session_id)})
        ).status_code == 503
    # the customer never comes back; a minute later a replica settles it on its own
    await sql.execute(
        "update pod_sessions set updated_at = now() - interval '2 minutes' where id = $1",
        session_id,
    )
    async with running(app):
        await mailbox.wait_for("receipt")
    assert (
        await sql.fetchval("select payment_status from pod_sessions where id = $1", session_id)
        == "succeeded"
    )
    assert len(await payment_intents_of(stripe_client, card.customer_id)) == 1


async def test_overdue_sessions_end_at_the_limit(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod_ids: dict[str, int],
) -> None:
    card, session_id = await book(client, stripe_client)
    await started_minutes_ago(sql, session_id, 200 * 60)
    [receipt] = await mailbox.wait_for("receipt")
    assert "Charged: £45.00" in receipt.text  # 180 min × £0.25, not 200
    [intent] = await payment_intents_of(stripe_client, card.customer_id)
    assert intent["amount"] == 4500
    assert (await client.get("/api/pod?podName=pod1")).json()["in_use"] is False


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"sessionId": str(uuid4())}, 404, "No session with this id."),
        (
            {"sessionId": "abc"},
            422,
            "sessionId (body): Input should be a valid UUID, invalid length: found 3",
        ),
        ({}, 422, "sessionId (body): Field required"),
    ],
)
async def test_end_session_rejects_unknown_and_malformed_ids(
    client: httpx.AsyncClient, body: dict[str, str], status: int, detail: str
) -> None:
    response = await client.post("/api/end-session", json=body)
    assert (response.status_code, response.json()) == (status, {"detail": detail})


async def test_access_code_email_survives_an_smtp_outage(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    pod_ids: dict[str, int],
) -> None:
    port = free_port()
    settings = make_settings(SMTP_PORT=port)
    async with running(create_app(settings)) as client:
        _, session_id = await book(client, stripe_client)
        await asyncio.sleep(1)
        row = await sql.fetchrow("select attempts, sent_at, last_error from email_outbox")
        assert row["attempts"] >= 1 and row["sent_at"] is None
        assert (
            await sql.fetchval("select count(*) from pod_sessions where id = $1", session_id) == 1
        )
        late_mailbox, controller = start_smtp_server(port)
        try:
            [mail] = await late_mailbox.wait_for("access_code", timeout=20)
            await asyncio.sleep(1)
            assert len(late_mailbox.messages("access_code")) == 1
        finally:
            controller.stop()
    assert str(session_id) in mail.end_session_link()


class RefusingMailbox(Mailbox):
    """A mail server that refuses one address, as one refuses an address it does not know."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address == "nobody@example.com":
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def test_a_delivery_round_notes_what_was_sent_and_retries_what_was_refused(
    make_settings: SettingsFactory, db: PostgresDatabase, sql: asyncpg.Connection
) -> None:
    await db.queue_emails(
        [
            pod_unavailable_email(setup_intent_id=f"seti_{n}", recipient=to, pod_name="pod1")
            for n, to in enumerate(["ada@example.com", "nobody@example.com", "bo@example.com"])
        ]
    )
    port = free_port()
    mailbox, controller = start_smtp_server(port, RefusingMailbox())
    try:
        # one round takes all three over one connection, as the service starts
        async with running(create_app(make_settings(SMTP_PORT=port))):
            received = await mailbox.wait_for("pod_unavailable", count=2)
            noted = "select count(*) from email_outbox where locked_until is null"
            for _ in range(100):  # until the round has noted all three
                if await sql.fetchval(noted) == 3:
                    break
                await asyncio.sleep(0.05)
    finally:
        controller.stop()
    assert sorted(r.recipients[0] for r in received) == ["ada@example.com", "bo@example.com"]
    rows = await sql.fetch(
        "select recipient, attempts, sent_at is not null as sent, locked_until, last_error, "
        "next_attempt_at > now() as later from email_outbox order by recipient"
    )
    assert [tuple(row.values())[:5] for row in rows] == [
        ("ada@example.com", 1, True, None, None),
        ("bo@example.com", 1, True, None, None),
        ("nobody@example.com", 1, False, None, rows[2]["last_error"]),
    ]
    assert "550" in rows[2]["last_error"] and rows[2]["later"] is True


@pytest.mark.parametrize(
    ("headers", "body", "detail"),
    [
        ({}, b"{}", "Missing Stripe-Signature header."),
        (
            {"Stripe-Signature": sign(b"{}", "whsec_wrong")},
            b"{}",
            "Invalid Stripe-Signature: it does not match this body and secret, or is older "
            "than 5 minutes.",
        ),
        (
            {"Stripe-Signature": sign(b"not json", WEBHOOK_SECRET)},
            b"not json",
            "The body is not JSON.",
        ),
        (
            {"Stripe-Signature": sign(b'{"id": "x"}', WEBHOOK_SECRET)},
            b'{"id": "x"}',
            "The body is not a Stripe event (id, type, data.object).",
        ),
    ],
)
async def test_webhook_rejects_what_stripe_did_not_sign(
    client: httpx.AsyncClient, headers: dict[str, str], body: bytes, detail: str
) -> None:
    response = await client.post("/webhook/stripe", content=body, headers=headers)
    assert (response.status_code, response.json()) == (400, {"detail": detail})


async def test_webhook_ignores_other_event_types(client: httpx.AsyncClient) -> None:
    response = await deliver(client, "customer.created", {"id": "cus_1", "object": "customer"})
    assert (response.status_code, response.json()) == (200, {"status": "ignored"})


async def test_setup_for_an_unknown_pod_starts_nothing_and_tells_the_operator(
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod_ids: dict[str, int],
) -> None:
    # Stripe itself must name the unknown pod: an event's body is never believed.
    ghost = await card_saved_outside_the_service(
        stripe_client, metadata={"pod_id": "999", "pod_name": "ghost"}, email=CUSTOMER
    )
    response = await deliver(client, "setup_intent.succeeded", ghost)
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    [alert] = await mailbox.wait_for("operator_alert")
    assert alert.recipients == [OPERATOR]
    assert alert.subject == "qwipsvc: card saved for an unknown pod ghost"
    assert await sql.fetchval("select count(*) from pod_sessions") == 0


async def test_payment_webhook_for_an_unknown_session_changes_nothing(
    client: httpx.AsyncClient, sql: asyncpg.Connection
) -> None:
    intent = {
        "id": "pi_x",
        "object": "payment_intent",
        "amount": 100,
        "metadata": {"session_id": str(uuid4())},
        "status": "succeeded",
    }
    response = await deliver(client, "payment_intent.succeeded", intent, event_id="evt_pi")
    assert response.json() == {"status": "success"}
    again = await deliver(client, "payment_intent.succeeded", intent, event_id="evt_pi")
    assert again.json() == {"status": "duplicate"}
    assert await sql.fetchval("select count(*) from pod_sessions") == 0


async def test_a_webhook_that_fails_midway_is_done_once_on_stripes_retry(
    app: FastAPI,
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    pod_ids: dict[str, int],
) -> None:
    async with running(app) as client:
        card = await save_card(client, stripe_client)
    body, headers = signed_event(
        "setup_intent.succeeded", card.setup_intent, WEBHOOK_SECRET, event_id="evt_retry"
    )
    outage = make_settings(STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}")
    async with running(create_app(outage)) as down:
        failed = await down.post("/webhook/stripe", content=body, headers=headers)
    assert failed.status_code == 503
    assert await sql.fetchval("select count(*) from stripe_events") == 0
    assert await sql.fetchval("select count(*) from pod_sessions") == 0
    async with running(app) as client:
        retried = await client.post("/webhook/stripe", content=body, headers=headers)
        again = await client.post("/webhook/stripe", content=body, headers=headers)
        assert (retried.json(), again.json()) == ({"status": "success"}, {"status": "duplicate"})
        await mailbox.wait_for("access_code")
    assert await sql.fetchval("select count(*) from pod_sessions") == 1
