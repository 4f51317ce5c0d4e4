"""Refunds (the operator's command and Stripe's dashboard) and disputes, against Postgres,
localstripe (with Stripe's idempotency) and an SMTP server.

The crash test at the end kills a refund command after Stripe made the refund and before
it was recorded: localstripe's idempotency layer (svc/local/idempotency.py) logs what
reached it and what it answered again, and its answer hold widens the window to kill in."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import stripe
from fastapi import FastAPI

from svc import refunds
from svc.database_accessor import PostgresDatabase
from svc.local.idempotency import HOLD_PATH, LOG_PATH
from svc.main import create_app
from svc.models.records import NewPod
from svc.services import Services
from tests.integration.conftest import SettingsFactory, running
from tests.support import booking
from tests.support.mail import Mailbox
from tests.support.settings import OPERATOR, WEBHOOK_SECRET
from tests.support.stripe_helpers import payment_intents_of, signed_event

ROOT = Path(__file__).resolve().parents[2]
CUSTOMER = "ada@example.com"


@pytest.fixture
async def pod_id(db: PostgresDatabase) -> int:
    pod = await db.insert_pod(
        NewPod(name="pod1", address="1 Demo Street, London", price=Decimal("0.25"), currency="gbp")
    )
    return pod.id


@dataclass
class Paid:
    """A session ended and paid: 10 min 30 s at £0.25/min, 263p."""

    session_id: UUID
    customer_id: str
    intents: dict[str, dict[str, Any]]
    """The session's PaymentIntents by purpose: "hold" (captured) and/or "charge"."""


@dataclass
class Stack:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services


@pytest.fixture
async def stack(
    make_settings: SettingsFactory, request: pytest.FixtureRequest, pod_id: int
) -> AsyncIterator[Stack]:
    """The service; HOLD_MINUTES as the test's indirect parameter says (0 by default)."""
    app = create_app(make_settings(HOLD_MINUTES=getattr(request, "param", 0)))
    async with running(app) as client:
        yield Stack(app, client)


async def paid_session(
    stack: Stack, stripe_client: stripe.StripeClient, sql: asyncpg.Connection
) -> Paid:
    card = await booking.save_card(stack.client, stripe_client, pod="pod1", email=CUSTOMER)
    session_id = UUID((await booking.confirm_booking(stack.client, card))["session_id"])
    await sql.execute(
        "update pod_sessions set start_time = now() - interval '630 seconds' where id = $1",
        session_id,
    )
    ended = await stack.client.post("/api/end-session", json={"sessionId": str(session_id)})
    assert (ended.status_code, ended.json()["payment_status"]) == (200, "succeeded"), ended.text
    intents = {
        "hold" if pi["capture_method"] == "manual" else "charge": pi
        for pi in await payment_intents_of(stripe_client, card.customer_id)
    }
    return Paid(session_id, card.customer_id, intents)


async def refunds_at_stripe(
    stripe_client: stripe.StripeClient, intent: dict[str, Any]
) -> list[int]:
    """The amounts of the refunds of a PaymentIntent that the service or the dashboard made
    (not the release of what a capture left), smallest first."""
    found = await stripe_client.v1.refunds.list_async(
        params={"payment_intent": intent["id"], "limit": 100}
    )
    made = [r for r in found.data if r.payment_intent == intent["id"]]
    return sorted(int(r.amount) for r in made)


async def refund_rows(sql: asyncpg.Connection, session_id: UUID) -> list[tuple[Any, ...]]:
    rows = await sql.fetch(
        "select payment_intent_id, amount_pence, state, stripe_refund_id is not null"
        " from session_refunds where session_id = $1 order by id",
        session_id,
    )
    return [tuple(row) for row in rows]


async def refunded_pence(sql: asyncpg.Connection, session_id: UUID) -> int:
    value: int = await sql.fetchval(
        "select refunded_pence from pod_sessions where id = $1", session_id
    )
    return value


async def test_a_refund_without_amount_refunds_the_whole_charge_and_tells_both(
    stack: Stack, stripe_client: stripe.StripeClient, sql: asyncpg.Connection, mailbox: Mailbox
) -> None:
    paid = await paid_session(stack, stripe_client, sql)
    charge = paid.intents["charge"]
    done = await refunds.refund_session(
        stack.services, paid.session_id, amount_pence=None, reason="the pod was not clean"
    )
    assert (done.refunded_pence, done.resumed, done.refundable_pence) == (263, False, 0)
    assert await refunds_at_stripe(stripe_client, charge) == [263]
    [made] = (
        await stripe_client.v1.refunds.list_async(params={"payment_intent": charge["id"]})
    ).data
    assert done.stripe_refund_ids == (made.id,)
    assert made.metadata.to_dict() == {
        "qwip_refund_id": made.metadata["qwip_refund_id"],
        "session_id": str(paid.session_id),
    }
    assert await refund_rows(sql, paid.session_id) == [(charge["id"], 263, "succeeded", True)]
    assert await refunded_pence(sql, paid.session_id) == 263
    [told] = await mailbox.wait_for("refund", to=CUSTOMER)
    assert told.subject == "Your Qwip refund for pod1: £2.63"
    assert "We have refunded £2.63 of the £2.63 you paid for your session in pod1" in told.text
    [operator] = await mailbox.wait_for("refund_operator", to=OPERATOR)
    assert operator.subject == f"Refund: £2.63 to {CUSTOMER} for pod1"
    assert "Reason: the pod was not clean." in operator.text
    with pytest.raises(refunds.RefundNotPossible) as nothing:
        await refunds.refund_session(stack.services, paid.session_id, amount_pence=1, reason=None)
    assert nothing.value.message == (
        "nothing can be refunded for this session: it paid £2.63 and £2.63 of it is "
        "refunded already"
    )


@pytest.mark.parametrize("stack", [1], indirect=True, ids=["hold 1 min"])
async def test_a_session_paid_by_capture_and_remainder_is_refunded_across_both(
    stack: Stack, stripe_client: stripe.StripeClient, sql: asyncpg.Connection, mailbox: Mailbox
) -> None:
    # A hold of 30p (the minimum charge), captured whole; the other 233p charged after it.
    paid = await paid_session(stack, stripe_client, sql)
    hold, charge = paid.intents["hold"], paid.intents["charge"]
    assert (hold["amount"], charge["amount"]) == (30, 233)

    first = await refunds.refund_session(
        stack.services, paid.session_id, amount_pence=250, reason=None
    )
    assert (first.refunded_pence, first.refundable_pence, len(first.stripe_refund_ids)) == (
        250,
        13,
        2,
    )
    # The remainder's charge first, then what is needed of the capture.
    assert await refunds_at_stripe(stripe_client, charge) == [233]
    assert await refunds_at_stripe(stripe_client, hold) == [17]

    rest = await refunds.refund_session(
        stack.services, paid.session_id, amount_pence=None, reason=None
    )
    assert (rest.refunded_pence, rest.refundable_pence) == (13, 0)
    assert await refunds_at_stripe(stripe_client, hold) == [13, 17]
    assert await refund_rows(sql, paid.session_id) == [
        (charge["id"], 233, "succeeded", True),
        (hold["id"], 17, "succeeded", True),
        (hold["id"], 13, "succeeded", True),
    ]
    assert await refunded_pence(sql, paid.session_id) == 263
    # One e-mail per requested refund, not per Stripe refund.
    told = await mailbox.wait_for("refund", to=CUSTOMER, count=2)
    assert sorted(m.subject for m in told) == [
        "Your Qwip refund for pod1: £0.13",
        "Your Qwip refund for pod1: £2.50",
    ]


@pytest.mark.parametrize("stack", [60], indirect=True, ids=["hold 60 min"])
async def test_a_refund_of_a_partly_captured_hold_refunds_only_what_was_captured(
    stack: Stack, stripe_client: stripe.StripeClient, sql: asyncpg.Connection
) -> None:
    # £15.00 held, £2.63 captured, the rest released (which localstripe books as a refund).
    paid = await paid_session(stack, stripe_client, sql)
    with pytest.raises(refunds.RefundNotPossible) as refused:
        await refunds.refund_session(stack.services, paid.session_id, amount_pence=264, reason=None)
    assert refused.value.message == (
        "at most £2.63 (263 pence) can be refunded for this session; nothing was refunded"
    )
    done = await refunds.refund_session(
        stack.services, paid.session_id, amount_pence=None, reason=None
    )
    assert done.refunded_pence == 263
    assert await refunds_at_stripe(stripe_client, paid.intents["hold"]) == [263]


def cli(settings_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "svc", *args],
        cwd=ROOT / "tests",  # no .env there
        env=settings_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli_env(stack: Stack) -> dict[str, str]:
    settings = stack.services.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_"))}
    assert settings.DATABASE_URL is not None and settings.STRIPE_API_BASE is not None
    env.update(
        PYTHONPATH=str(ROOT),
        APP_ENV="local",
        DATABASE_URL=settings.DATABASE_URL.get_secret_value(),
        STRIPE_SECRET=settings.stripe_secret,
        STRIPE_PUBLISHABLE_KEY="pk_test_qwip",
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STRIPE_API_BASE=settings.STRIPE_API_BASE,
        OPERATOR_EMAIL=OPERATOR,
        OUTBOX_DIR=str(settings.OUTBOX_DIR),
        LOCAL_DATA_DIR=str(settings.LOCAL_DATA_DIR),
    )
    return env


async def test_the_cli_refuses_more_than_was_paid_in_one_line_and_changes_nothing(
    stack: Stack, stripe_client: stripe.StripeClient, sql: asyncpg.Connection, mailbox: Mailbox
) -> None:
    paid = await paid_session(stack, stripe_client, sql)
    env = cli_env(stack)
    refused = await asyncio.to_thread(
        cli, env, "sessions", "refund", str(paid.session_id), "--amount-pence", "264"
    )
    assert (refused.returncode, refused.stdout, refused.stderr) == (
        1,
        "",
        "error: at most £2.63 (263 pence) can be refunded for this session; nothing was "
        "refunded\n",
    )
    assert await refunds_at_stripe(stripe_client, paid.intents["charge"]) == []
    assert await refund_rows(sql, paid.session_id) == []
    assert await refunded_pence(sql, paid.session_id) == 0

    done = await asyncio.to_thread(
        cli, env, "sessions", "refund", str(paid.session_id), "--amount-pence", "100",
        "--reason", "lock failed",
    )  # fmt: skip
    [made] = (
        await stripe_client.v1.refunds.list_async(
            params={"payment_intent": paid.intents["charge"]["id"]}
        )
    ).data
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"refunded £1.00 (Stripe {made.id}); £1.63 can still be refunded\n",
        "",
    )
    # The e-mails are queued for the service's sender, which is running.
    await mailbox.wait_for("refund", to=CUSTOMER)
    await mailbox.wait_for("refund_operator", to=OPERATOR)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sessions", "refund", "nope"], "'nope' is not a session id (a UUID)"),
        (
            ["sessions", "refund", "6a1f2c3e-1111-4222-8333-944455556666", "--amount-pence", "0"],
            "'0' is not an amount in pence: a whole number above 0 (263 for £2.63)",
        ),
        (
            ["sessions", "refund", "6a1f2c3e-1111-4222-8333-944455556666", "--amount-pence", "1.5"],
            "'1.5' is not an amount in pence: a whole number above 0 (263 for £2.63)",
        ),
    ],
)
def test_the_cli_refuses_bad_input_in_words(args: list[str], message: str) -> None:
    result = cli({**os.environ, "PYTHONPATH": str(ROOT)}, *args)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith(message)


async def test_an_unknown_or_open_session_is_refused(
    stack: Stack, stripe_client: stripe.StripeClient, sql: asyncpg.Connection
) -> None:
    with pytest.raises(refunds.SessionNotFound):
        await refunds.refund_session(stack.services, UUID(int=7), amount_pence=None, reason=None)
    card = await booking.save_card(stack.client, stripe_client, pod="pod1", email=CUSTOMER)
    session_id = UUID((await booking.confirm_booking(stack.client, card))["session_id"])
    with pytest.raises(refunds.RefundNotPossible) as refused:
        await refunds.refund_session(stack.services, session_id, amount_pence=None, reason=None)
    assert refused.value.message == "the session is still open: it has paid nothing yet"
    ended = await stack.client.post("/api/end-session", json={"sessionId": str(session_id)})
    assert ended.json()["payment_status"] == "not_charged"
    with pytest.raises(refunds.RefundNotPossible) as refused:
        await refunds.refund_session(stack.services, session_id, amount_pence=None, reason=None)
    assert refused.value.message == "nothing can be refunded for this session: it paid nothing"
    assert await refund_rows(sql, session_id) == []


async def test_concurrent_refunds_never_refund_more_than_was_paid(
    stack: Stack, stripe_client: stripe.StripeClient, sql: asyncpg.Connection
) -> None:
    """Eight refunds of £2.00 at once on a session that paid £2.63: the database lets one
    through. The others are refused (at most 63p is left), or complete that one refund
    under its own key when they find it reserved and not yet finished."""
    paid = await paid_session(stack, stripe_client, sql)

    async def attempt() -> str:
        try:
            done = await refunds.refund_session(
                stack.services, paid.session_id, amount_pence=200, reason=None
            )
        except refunds.RefundNotPossible as error:
            return error.message
        return "resumed" if done.resumed else "refunded"

    outcomes = await asyncio.gather(*(attempt() for _ in range(8)))
    assert outcomes.count("refunded") == 1, outcomes
    assert set(outcomes) <= {
        "refunded",
        "resumed",
        "at most £0.63 (63 pence) can be refunded for this session; nothing was refunded",
    }
    assert await refunds_at_stripe(stripe_client, paid.intents["charge"]) == [200]
    assert await refunded_pence(sql, paid.session_id) == 200


def charge_id(intent: dict[str, Any]) -> str:
    """localstripe expands a PaymentIntent's latest charge; Stripe gives its id."""
    latest = intent["latest_charge"]
    return str(latest["id"] if isinstance(latest, dict) else latest)


def refund_event(kind: str, stripe_object: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return signed_event(kind, stripe_object, WEBHOOK_SECRET)


@pytest.mark.parametrize("stack", [60], indirect=True, ids=["hold 60 min"])
async def test_a_dashboard_refund_reaches_the_session_once_and_ours_are_not_counted_twice(
    stack: Stack, stripe_client: stripe.StripeClient, sql: asyncpg.Connection, mailbox: Mailbox
) -> None:
    paid = await paid_session(stack, stripe_client, sql)
    hold = paid.intents["hold"]
    # Made in the dashboard: Stripe knows, the service not yet.
    made = await stripe_client.v1.refunds.create_async(
        params={"payment_intent": hold["id"], "amount": 100}
    )
    charge = (await stripe_client.v1.charges.retrieve_async(charge_id(hold))).to_dict()
    body, headers = refund_event("charge.refunded", charge)
    hook = await stack.client.post("/webhook/stripe", content=body, headers=headers)
    assert (hook.status_code, hook.json()) == (200, {"status": "success"})
    again = await stack.client.post("/webhook/stripe", content=body, headers=headers)
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    # 100p refunded: not the £12.37 released at the capture, which localstripe lists too.
    assert await refunded_pence(sql, paid.session_id) == 100
    assert await refund_rows(sql, paid.session_id) == [(hold["id"], 100, "succeeded", True)]
    [told] = await mailbox.wait_for("refund", to=CUSTOMER)
    assert told.subject == "Your Qwip refund for pod1: £1.00"
    [operator] = await mailbox.wait_for("refund_operator", to=OPERATOR)
    assert operator.text.replace("\r\n", "\n").startswith(
        f"A refund of £1.00 made in Stripe's dashboard is now recorded on session "
        f"{paid.session_id} in pod1.\n\n"
    )
    assert f"Stripe refund: {made.id}." in operator.text

    # The operator refunds the rest with the command; Stripe's events of it change nothing.
    done = await refunds.refund_session(
        stack.services, paid.session_id, amount_pence=None, reason=None
    )
    assert done.refunded_pence == 163
    for kind, stripe_object in (
        (
            "refund.updated",
            (await stripe_client.v1.refunds.retrieve_async(done.stripe_refund_ids[0])).to_dict(),
        ),
        ("charge.refunded", charge),
    ):
        body, headers = refund_event(kind, stripe_object)
        hook = await stack.client.post("/webhook/stripe", content=body, headers=headers)
        assert (hook.status_code, hook.json()) == (200, {"status": "success"})
    assert await refunded_pence(sql, paid.session_id) == 263
    assert await refunds_at_stripe(stripe_client, hold) == [100, 163]
    assert len(await refund_rows(sql, paid.session_id)) == 2
    await mailbox.wait_for("refund", to=CUSTOMER, count=2)
    await asyncio.sleep(0.5)  # nothing more arrives: one e-mail per refund
    assert len(mailbox.messages("refund", to=CUSTOMER)) == 2


async def test_a_refund_event_for_a_payment_no_session_knows_is_ignored(
    stack: Stack, stripe_client: stripe.StripeClient, sql: asyncpg.Connection
) -> None:
    body, headers = refund_event(
        "charge.refunded", {"id": "ch_x", "object": "charge", "payment_intent": "pi_unknown"}
    )
    hook = await stack.client.post("/webhook/stripe", content=body, headers=headers)
    assert (hook.status_code, hook.json()) == (200, {"status": "ignored"})
    assert await sql.fetchval("select count(*) from session_refunds") == 0


async def code_emailed(sql: asyncpg.Connection, session_id: UUID) -> None:
    """Until the outbox has noted the access-code e-mail as sent."""
    for _ in range(200):
        if await sql.fetchval(
            "select sent_at is not null from email_outbox where dedupe_key = $1",
            f"access_code:{session_id}",
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the access-code e-mail was not sent")


def dispute(intent: dict[str, Any], *, dispute_id: str = "dp_1") -> dict[str, Any]:
    """A Dispute as Stripe sends it in charge.dispute.created (localstripe has none)."""
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": intent["amount"],
        "currency": "gbp",
        "charge": charge_id(intent),
        "payment_intent": intent["id"],
        "reason": "fraudulent",
        "status": "needs_response",
        "evidence_details": {"due_by": int(time.time()) + 7 * 86400, "has_evidence": False},
    }


async def test_a_dispute_marks_the_session_and_gives_the_operator_the_evidence(
    stack: Stack, stripe_client: stripe.StripeClient, sql: asyncpg.Connection, mailbox: Mailbox
) -> None:
    paid = await paid_session(stack, stripe_client, sql)
    await code_emailed(sql, paid.session_id)
    # What Seam's lock.unlocked events left (svc/seam_events.py): evidence of use.
    await sql.execute(
        "insert into session_unlocks (session_id, first_unlocked_at, last_unlocked_at, "
        "unlock_count) values ($1, '2026-11-30 09:01:00+00', '2026-11-30 09:40:00+00', 3)",
        paid.session_id,
    )
    body, headers = signed_event(
        "charge.dispute.created", dispute(paid.intents["charge"]), WEBHOOK_SECRET
    )
    hook = await stack.client.post("/webhook/stripe", content=body, headers=headers)
    assert (hook.status_code, hook.json()) == (200, {"status": "success"})
    again = await stack.client.post("/webhook/stripe", content=body, headers=headers)
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    row = await sql.fetchrow(
        "select disputed_at is not null, dispute_id from pod_sessions where id = $1",
        paid.session_id,
    )
    assert tuple(row) == (True, "dp_1")
    [told] = await mailbox.wait_for("dispute_operator", to=OPERATOR)
    assert told.subject == "Dispute of £2.63 for pod1: answer it in Stripe"
    text = told.text.replace("\r\n", "\n")
    assert text.startswith(
        f"{CUSTOMER} has disputed £2.63 with their bank for session {paid.session_id} in pod1 "
        "(Stripe dispute dp_1, reason: fraudulent). The session is marked disputed.\n\n"
        "What to do now: open the dispute in Stripe's dashboard (Payments, then Disputes)"
    )
    for fact in (
        "service_date: ",
        f"customer_email_address: {CUSTOMER}. Amount charged for the session: £2.63.",
        "access_activity_log:",
        f": the door code was e-mailed to {CUSTOMER}.",
        "The pod has no smart lock that the service programs",
        "30 November 2026, 9:01am: the door opened with this session's code for the first time "
        "(reported by the lock through Seam); 3 unlocks with the code in all.",
        ": the session ended; £2.63 charged.",
    ):
        assert fact in text, fact
    await asyncio.sleep(0.5)
    assert len(mailbox.messages("dispute_operator")) == 1


async def test_a_dispute_on_a_payment_no_session_knows_is_told_to_the_operator(
    stack: Stack, mailbox: Mailbox, sql: asyncpg.Connection
) -> None:
    unknown = {"id": "pi_unknown", "amount": 500, "latest_charge": "ch_unknown"}
    body, headers = signed_event("charge.dispute.created", dispute(unknown), WEBHOOK_SECRET)
    hook = await stack.client.post("/webhook/stripe", content=body, headers=headers)
    assert (hook.status_code, hook.json()) == (200, {"status": "ignored"})
    [told] = await mailbox.wait_for("operator_alert", to=OPERATOR)
    assert told.subject == "qwipsvc: a dispute on a payment that no session knows"
    assert "dp_1" in told.text and "pi_unknown" in told.text


async def test_our_refund_whose_command_died_is_recorded_by_stripes_event_with_its_emails(
    stack: Stack, stripe_client: stripe.StripeClient, sql: asyncpg.Connection, mailbox: Mailbox
) -> None:
    from svc.payments_manager.refunds import create_refund

    paid = await paid_session(stack, stripe_client, sql)
    charge = paid.intents["charge"]
    # What a command does up to Stripe's answer, then dies: reserved and sent, not recorded.
    reserved = await stack.services.db.reserve_refund(
        paid.session_id, request_id=UUID(int=1), amount_pence=100, reason="dirty"
    )
    [part] = reserved.parts
    await create_refund(
        stack.services.stripe,
        refund_id=part.id,
        session_id=paid.session_id,
        payment_intent_id=part.payment_intent_id,
        amount_pence=part.amount_pence,
    )
    assert await refund_rows(sql, paid.session_id) == [(charge["id"], 100, "requested", False)]
    body, headers = refund_event(
        "charge.refunded",
        (await stripe_client.v1.charges.retrieve_async(charge_id(charge))).to_dict(),
    )
    hook = await stack.client.post("/webhook/stripe", content=body, headers=headers)
    assert (hook.status_code, hook.json()) == (200, {"status": "success"})
    assert await refund_rows(sql, paid.session_id) == [(charge["id"], 100, "succeeded", True)]
    assert await refunded_pence(sql, paid.session_id) == 100
    [told] = await mailbox.wait_for("refund", to=CUSTOMER)
    assert told.subject == "Your Qwip refund for pod1: £1.00"
    [operator] = await mailbox.wait_for("refund_operator", to=OPERATOR)
    assert "Reason: dirty." in operator.text
    # Nothing is left unfinished: the next command refunds anew, from what is left.
    done = await refunds.refund_session(
        stack.services, paid.session_id, amount_pence=None, reason=None
    )
    assert (done.resumed, done.refunded_pence) == (False, 163)
    assert await refunds_at_stripe(stripe_client, charge) == [100, 163]


# A refund command killed inside the refund window


@pytest.fixture
def refunds_held(localstripe_url: str) -> Iterator[None]:
    """localstripe makes each refund at once, then holds its answer back for 10 s (and
    answers 409 to the same key meanwhile, as Stripe does while a request is in flight)."""
    httpx.post(f"{localstripe_url}{HOLD_PATH}", data={"ms": "10000", "path": "^/v1/refunds$"})
    yield
    httpx.post(f"{localstripe_url}{HOLD_PATH}", data={"ms": "0"})


def refund_requests(localstripe_url: str, session_id: UUID) -> list[dict[str, Any]]:
    """The refund POSTs that localstripe answered for this session, in order."""
    log: list[dict[str, Any]] = httpx.get(f"{localstripe_url}{LOG_PATH}").json()
    return [
        entry
        for entry in log
        if entry["path"] == "/v1/refunds" and entry["metadata"].get("session_id") == str(session_id)
    ]


async def test_a_refund_killed_after_stripe_made_it_is_made_once_when_run_again(
    stack: Stack,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    mailbox: Mailbox,
    localstripe_url: str,
    refunds_held: None,
) -> None:
    paid = await paid_session(stack, stripe_client, sql)
    env = cli_env(stack)
    command = [sys.executable, "-m", "svc", "sessions", "refund", str(paid.session_id)]
    first = subprocess.Popen(
        [*command, "--amount-pence", "100"],
        cwd=ROOT / "tests",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # Killed once Stripe has made the refund (the stand-in logs its status as soon as
        # the work is done), while its answer is still on its way back.
        deadline = time.monotonic() + 30
        while not any(
            "status" in entry for entry in refund_requests(localstripe_url, paid.session_id)
        ):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the refund never reached localstripe"
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.communicate()
    assert first.returncode == -signal.SIGKILL
    charge = paid.intents["charge"]
    assert await refunds_at_stripe(stripe_client, charge) == [100]
    # Stripe refunded; the service has not recorded it: reserved, not refunded.
    assert await refund_rows(sql, paid.session_id) == [(charge["id"], 100, "requested", False)]
    assert await refunded_pence(sql, paid.session_id) == 0

    # Answers go back at once again (the killed command's is still held back a while).
    httpx.post(f"{localstripe_url}{HOLD_PATH}", data={"ms": "0"})
    # The operator runs the command again (as the first said, or asked for all of it).
    again = await asyncio.to_thread(cli, env, "sessions", "refund", str(paid.session_id))
    assert await refunds_at_stripe(stripe_client, charge) == [100]
    [made] = (
        await stripe_client.v1.refunds.list_async(params={"payment_intent": charge["id"]})
    ).data
    assert (again.returncode, again.stdout, again.stderr) == (
        0,
        f"completed the refund of £1.00 that an earlier run reserved and did not finish "
        f"(Stripe {made.id}); nothing else was refunded; £1.63 can still be refunded\n",
        "",
    )
    # The same key twice: the second answered from the first, not carried out again (after
    # 409s while the first one's answer was still held back).
    sent = refund_requests(localstripe_url, paid.session_id)
    answered = [(entry["status"], entry["replayed"]) for entry in sent if entry["status"] != 409]
    assert answered == [(200, False), (200, True)]
    assert {entry["idempotency_key"] for entry in sent} == {sent[0]["idempotency_key"]}
    assert sent[0]["idempotency_key"].startswith(f"qwip-refund-{paid.session_id}-")
    assert await refunds_at_stripe(stripe_client, charge) == [100]
    assert await refund_rows(sql, paid.session_id) == [(charge["id"], 100, "succeeded", True)]
    assert await refunded_pence(sql, paid.session_id) == 100
    [told] = await mailbox.wait_for("refund", to=CUSTOMER)
    assert told.subject == "Your Qwip refund for pod1: £1.00"
    await mailbox.wait_for("refund_operator", to=OPERATOR)
