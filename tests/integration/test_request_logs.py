"""Every request has an id, in its X-Request-ID answer and on every log line it causes:
its Stripe calls, and the e-mails it queued when they are sent. Over HTTP against Postgres,
localstripe and an SMTP server."""

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from decimal import Decimal

import asyncpg
import httpx
import pytest
import stripe

from svc.database_accessor import PostgresDatabase
from svc.main import create_app
from svc.models.records import NewPod
from tests.integration.conftest import SettingsFactory, running
from tests.support import booking
from tests.support.mail import Mailbox

CUSTOMER = "ada@example.com"
SESSION = "6a1f2c3e-1111-4222-8333-944455556666"


@pytest.fixture
async def pod(db: PostgresDatabase) -> None:
    await db.insert_pod(
        NewPod(name="pod1", address="1 Demo Street, London", price=Decimal("0.25"), currency="gbp")
    )


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """A console handler on the root logger, as basicConfig installs one: the service's
    LOG_FORMAT formats it."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    root = logging.getLogger()
    root.addHandler(handler)
    yield output
    root.removeHandler(handler)


def events_of(caplog: pytest.LogCaptureFixture, request_id: str) -> list[str]:
    """The event names (a line's first word) of the lines carrying `request_id`."""
    return [
        record.getMessage().split(" ", 1)[0]
        for record in caplog.records
        if getattr(record, "request_id", None) == request_id
    ]


async def until_logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    """Until the e-mail sender (its own task) has logged `text`."""
    for _ in range(200):
        if text in caplog.text:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing logged {text!r}")


async def test_the_lines_a_booking_causes_carry_its_id_up_to_its_email(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    mailbox: Mailbox,
    sql: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    pod: None,
) -> None:
    caplog.set_level(logging.INFO)
    async with running(create_app(make_settings())) as client:
        card = await booking.save_card(client, stripe_client, pod="pod1", email=CUSTOMER)
        confirmed = await client.post(
            "/api/confirm-booking",
            json={"setup_intent_id": card.setup_intent_id, "client_secret": card.client_secret},
            headers={"X-Request-ID": "booking-7f3a"},
        )
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.headers["x-request-id"] == "booking-7f3a"
        await mailbox.wait_for("access_code", to=CUSTOMER)
        await until_logged(caplog, "email.sent kind=access_code")

    assert events_of(caplog, "booking-7f3a") == [
        "stripe.call",  # the SetupIntent, as Stripe's API has it
        "stripe.call",  # the customer's e-mail
        "booking.started",
        "email.sent",
    ]
    payload = await sql.fetchval("select payload from email_outbox where kind = 'access_code'")
    assert json.loads(payload)["request_id"] == "booking-7f3a"
    # The card's setup, an earlier request, had an id of its own.
    [setup_id] = {
        record.request_id
        for record in caplog.records
        if record.getMessage().startswith("stripe.call operation=POST /v1/setup_intents ")
    }
    assert re.fullmatch(r"[0-9a-f]{16}", setup_id)


@pytest.mark.parametrize(
    "given",
    [
        None,
        SESSION,  # a UUID could be a session id, which no log line shows whole
        SESSION.replace("-", ""),
        "has spaces in it",
        "x" * 65,
        "accented-\xe9".encode().decode("latin-1"),
    ],
)
async def test_a_request_without_a_sane_id_is_given_a_new_one(
    client: httpx.AsyncClient, given: str | None
) -> None:
    headers = {"X-Request-ID": given.encode("latin-1")} if given else {}
    first = await client.get("/api/pods", headers=headers)
    second = await client.get("/api/pods", headers=headers)
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(re.fullmatch(r"[0-9a-f]{16}", made) for made in ids)
    assert ids[0] != ids[1]


async def test_a_sane_id_is_kept_on_a_refusal_too(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/end-session", content=b"{}", headers={"X-Request-ID": "lb-2026.11.30:42"}
    )
    assert (response.status_code, response.json()) == (
        415,
        {"detail": "Send the body as JSON, with Content-Type: application/json."},
    )
    assert response.headers["x-request-id"] == "lb-2026.11.30:42"


async def test_with_log_format_json_each_line_is_one_object_with_the_request_id(
    make_settings: SettingsFactory, console: io.StringIO, pod: None
) -> None:
    async with running(create_app(make_settings(LOG_FORMAT="json"))) as client:
        logging.getLogger("svc.test").info("test.outside_requests")
        response = await client.post(
            "/api/create-setup-intent",
            json={"podName": "pod1", "email": CUSTOMER},
            headers={"X-Request-ID": "r-1"},
        )
        assert response.status_code == 200, response.text

    lines = [json.loads(line) for line in console.getvalue().splitlines()]
    outside = next(line for line in lines if line["message"] == "test.outside_requests")
    assert outside == {
        "time": outside["time"],
        "level": "INFO",
        "logger": "svc.test",
        "message": "test.outside_requests",
        "request_id": None,
    }
    calls = [line for line in lines if line["message"].startswith("stripe.call ")]
    assert [(line["logger"], line["request_id"]) for line in calls] == [("svc.outbound", "r-1")] * 2
    assert [line["message"].split(" ")[1] for line in calls] == [
        "operation=POST",
        "operation=POST",
    ]
