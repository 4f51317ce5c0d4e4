import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from uuid import UUID

import pytest

from svc import email_manager
from svc.email_manager import EmailNotSent, FileSender, Mailer, SmtpSender, compose
from svc.env import Settings
from svc.models.records import OutboxEmail, QueuedEmail, SessionRecord
from svc.types import PaymentStatus
from tests.conftest import free_port
from tests.support.mail import Mailbox


def build_message(email: OutboxEmail, settings: Settings) -> EmailMessage:
    """The composed message as a mail client reads it."""
    message = message_from_bytes(compose(email, settings).raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


SESSION_ID = UUID("6a1f2c3e-1111-4222-8333-944455556666")
START = datetime(2026, 11, 26, 15, 5, tzinfo=UTC)


def outbox(queued: QueuedEmail, *, extra: dict[str, object] | None = None) -> OutboxEmail:
    return OutboxEmail(
        id=1,
        dedupe_key=queued.dedupe_key,
        kind=queued.kind,
        recipient=queued.recipient,
        payload={**queued.payload, **(extra or {})},
        attempts=1,
    )


def access_code() -> OutboxEmail:
    queued = email_manager.access_code_email(
        session_id=SESSION_ID,
        recipient="ada@example.com",
        access_code="042917",
        pod_name="pod1",
        pod_address="1 Demo Street, London",
        price_per_minute=Decimal("0.2500"),
        currency="gbp",
        end_session_url=f"https://pods.example.com/end-session?sessionId={SESSION_ID}",
    )
    # the database adds the start time when it opens the session
    return outbox(queued, extra={"start_time": START.isoformat()})


def session(**changes: object) -> SessionRecord:
    values: dict[str, object] = dict(
        id=SESSION_ID,
        pod_id=1,
        pod_name="pod1",
        pod_address="1 Demo Street, London",
        seam_device_id=None,
        user_email="ada@example.com",
        start_time=START,
        end_time=START + timedelta(minutes=10, seconds=30),
        price_per_minute=Decimal("0.25"),
        free_minutes=0,
        currency="gbp",
        stripe_customer_id="cus_1",
        stripe_payment_method="pm_1",
        setup_intent_id="seti_1",
        access_code="042917",
        access_code_id=None,
        access_code_status=None,
        cost_pence=263,
        payment_intent_id=None,
        payment_status=PaymentStatus.PENDING,
        payment_error=None,
        now=START + timedelta(minutes=11),
    )
    values.update(changes)
    return SessionRecord(**values)  # type: ignore[arg-type]


def test_access_code_message_has_everything_the_customer_needs(settings: Settings) -> None:
    message = build_message(access_code(), settings)
    assert message["Subject"] == "Your Qwip access code for pod1"
    assert message["To"] == "ada@example.com"
    assert message["From"] == "Qwip <pods@example.com>"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Your door code for pod1 is 042917." in text
    assert "Address: 1 Demo Street, London" in text
    assert "Started: 26 November 2026, 3:05pm" in text
    assert "Price: £0.25 per minute" in text
    assert f"End my session: https://pods.example.com/end-session?sessionId={SESSION_ID}" in text
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "042917" in html
    assert f'href="https://pods.example.com/end-session?sessionId={SESSION_ID}"' in html


def test_start_time_is_shown_in_the_configured_time_zone(tmp_path: Path) -> None:
    tokyo = Settings(_env_file=None, TIMEZONE="Asia/Tokyo", OUTBOX_DIR=tmp_path)
    text = build_message(access_code(), tokyo).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Started: 27 November 2026, 12:05am" in text


def test_html_escapes_what_it_shows(settings: Settings) -> None:
    email = access_code()
    email.payload["pod_address"] = "<script>alert(1)</script>"
    html = build_message(email, settings).get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_message_id_is_the_same_on_every_attempt(settings: Settings) -> None:
    first = build_message(access_code(), settings)["Message-ID"]
    assert first == build_message(access_code(), settings)["Message-ID"]
    other = outbox(
        email_manager.pod_unavailable_email(
            setup_intent_id="seti_1", recipient="a@b.c", pod_name="pod1"
        )
    )
    assert build_message(other, settings)["Message-ID"] != first


@pytest.mark.parametrize(
    ("status", "kinds"),
    [
        (PaymentStatus.SUCCEEDED, [("receipt", "ada@example.com")]),
        (PaymentStatus.NOT_CHARGED, [("receipt", "ada@example.com")]),
        (
            PaymentStatus.FAILED,
            [("payment_failed", "ada@example.com"), ("payment_failed_operator", "ops@example.com")],
        ),
        (
            PaymentStatus.REQUIRES_ACTION,
            [("payment_failed", "ada@example.com"), ("payment_failed_operator", "ops@example.com")],
        ),
        (PaymentStatus.PENDING, []),
    ],
)
def test_settlement_sends_the_right_messages(
    status: PaymentStatus, kinds: list[tuple[str, str]]
) -> None:
    emails = email_manager.settlement_emails(
        session(),
        cost_pence=263,
        status=status,
        error="card_declined: x",
        operator="ops@example.com",
    )
    assert [(e.kind, e.recipient) for e in emails] == kinds
    assert all(e.dedupe_key.endswith(str(SESSION_ID)) for e in emails)


def test_receipt_says_what_was_charged_and_for_how_long(settings: Settings) -> None:
    [receipt] = email_manager.settlement_emails(
        session(), cost_pence=263, status=PaymentStatus.SUCCEEDED, error=None, operator=None
    )
    text = build_message(outbox(receipt), settings).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "From 26 November 2026, 3:05pm to 26 November 2026, 3:15pm (10 min 30 s)." in text
    assert "Charged: £2.63 to your saved card." in text


def test_operator_message_names_the_session_and_the_amount_owed(settings: Settings) -> None:
    [_, operator] = email_manager.settlement_emails(
        session(),
        cost_pence=263,
        status=PaymentStatus.FAILED,
        error="card_declined: Your card was declined.",
        operator="ops@example.com",
    )
    message = build_message(outbox(operator), settings)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert message["Subject"] == "Payment failed: £2.63 owed for pod1"
    assert f"Session {SESSION_ID} in pod1 ended and its charge failed." in text
    assert "Reason: card_declined: Your card was declined." in text
    assert "Customer: ada@example.com (Stripe cus_1)" in text


def test_no_operator_address_means_no_operator_message(caplog: pytest.LogCaptureFixture) -> None:
    assert email_manager.operator_alert(dedupe_key="k", operator=None, subject="s", text="t") == []
    assert "operator.no_address" in caplog.text


async def test_local_mode_writes_eml_files_and_prints_them(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="svc.email_manager")
    assert not settings.uses_smtp
    await Mailer(settings, FileSender(settings.OUTBOX_DIR)).send(access_code())
    [path] = list(settings.OUTBOX_DIR.glob("*.eml"))
    assert path.name.endswith("-000001-access_code.eml")
    assert b"Subject: Your Qwip access code for pod1" in path.read_bytes()
    assert "Your door code for pod1 is 042917." in caplog.text


async def test_smtp_delivers_to_a_real_server(tmp_path: Path, smtp_server: Mailbox) -> None:
    smtp_server.clear()
    settings = Settings(
        _env_file=None,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=smtp_server.port,
        SMTP_SECURITY="none",
        EMAIL_FROM="pods@example.com",
        OUTBOX_DIR=tmp_path,
    )
    assert settings.uses_smtp
    await Mailer(settings, SmtpSender(settings)).send(access_code())
    [received] = await smtp_server.wait_for("access_code")
    assert received.recipients == ["ada@example.com"]
    assert received.access_code() == "042917"
    assert list(tmp_path.iterdir()) == []


async def test_smtp_refusing_raises_email_not_sent(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=free_port(),
        SMTP_SECURITY="none",
        SMTP_TIMEOUT_SECONDS=2,
        OUTBOX_DIR=tmp_path,
    )
    with pytest.raises(EmailNotSent, match="SMTPConnect"):
        await Mailer(settings, SmtpSender(settings)).send(access_code())


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_smtp_logs_in_with_the_sender_and_app_password(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        assert isinstance(auth_data, LoginPassword)
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"app-password")

    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_require_tls=False,
        auth_required=True,
    )
    controller.start()
    try:
        settings = Settings(
            _env_file=None,
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=port,
            SMTP_SECURITY="none",
            EMAIL_FROM="pods@example.com",
            EMAIL_PASSWORD="app-password",
            OUTBOX_DIR=tmp_path,
        )
        await Mailer(settings, SmtpSender(settings)).send(access_code())
        await mailbox.wait_for("access_code")
        assert logins == [(b"pods@example.com", b"app-password")]
    finally:
        controller.stop()


def test_access_code_on_a_smart_lock_says_the_lock_is_receiving_it(settings: Settings) -> None:
    email = access_code()
    plain = build_message(email, settings).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    email.payload["smart_lock"] = True
    locked = build_message(email, settings).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    line = "The door's smart lock is receiving this code now; it works within a minute or so."
    assert line not in plain
    assert f"Your door code for pod1 is 042917.\n\n{line}\n\n" in locked


def test_lock_failure_tells_the_customer_and_the_operator(settings: Settings) -> None:
    customer, operator = email_manager.lock_failed_emails(
        session(seam_device_id="lock_1"), reason="Seam has no device", operator="ops@example.com"
    )
    assert (customer.kind, customer.recipient, customer.dedupe_key) == (
        "lock_failed",
        "ada@example.com",
        f"lock_failed:{SESSION_ID}",
    )
    message = build_message(outbox(customer), settings)
    assert message["Subject"] == "Your Qwip session in pod1 could not start"
    assert message.get_body(("plain",)).get_content() == (  # type: ignore[union-attr]
        "Sorry: the door lock of pod1 did not accept your access code, so the code we sent "
        "you will not open the door.\n\nYour session has been ended and you have not been "
        "charged. Please try again in a few minutes or choose another pod.\n"
    )
    alert = build_message(outbox(operator), settings)
    assert (operator.recipient, alert["Subject"]) == (
        "ops@example.com",
        "qwipsvc: the lock of pod1 did not take a code; session ended",
    )
    assert alert.get_body(("plain",)).get_content() == (  # type: ignore[union-attr]
        f"The access code of session {SESSION_ID} could not be put on the lock of pod1 (Seam "
        "device lock_1): Seam has no device. The session was ended without charge, the pod "
        "is free again and the customer (ada@example.com) has been told.\n"
    )


def test_a_code_left_on_a_lock_is_reported_with_when_it_expires(settings: Settings) -> None:
    [alert] = email_manager.code_not_removed_alert(
        session(seam_device_id="lock_1", access_code_id="ac_1"),
        reason="deleting the code: ConnectError",
        expires="26 November 2026, 6:05pm",
        operator="ops@example.com",
    )
    message = build_message(outbox(alert), settings)
    assert message["Subject"] == ("qwipsvc: an ended session's code is still on the lock of pod1")
    assert message.get_body(("plain",)).get_content() == (  # type: ignore[union-attr]
        f"The access code of session {SESSION_ID} could not be taken off the lock of pod1 "
        "(Seam device lock_1, access code ac_1): deleting the code: ConnectError. The service "
        "keeps trying; the lock stops taking the code by itself at 26 November 2026, 6:05pm. "
        "The charge and the receipt were not held up by this.\n"
    )


HOSTILE = "<script>alert(1)</script>"


def every_kind(**session_changes: object) -> list[OutboxEmail]:
    """One queued message of each kind, as the booking code queues them."""
    record = session(**session_changes)
    failed = email_manager.settlement_emails(
        record, cost_pence=263, status=PaymentStatus.FAILED, error=HOSTILE, operator="o@x.y"
    )
    [receipt] = email_manager.settlement_emails(
        record, cost_pence=263, status=PaymentStatus.SUCCEEDED, error=None, operator=None
    )
    started = email_manager.access_code_email(
        session_id=record.id,
        recipient="ada@example.com",
        access_code="042917",
        pod_name=record.pod_name,
        pod_address=record.pod_address,
        price_per_minute=Decimal("0.25"),
        currency="gbp",
        end_session_url="https://pods.example.com/end-session?a=1&b=2",
    )
    unavailable = email_manager.pod_unavailable_email(
        setup_intent_id="seti_1", recipient="a@b.c", pod_name=record.pod_name
    )
    lock = email_manager.lock_failed_emails(record, reason=HOSTILE, operator="o@x.y")
    queued = [started, unavailable, receipt, *failed, *lock]
    return [
        outbox(q, extra={"start_time": START.isoformat()} if q is started else None) for q in queued
    ]


def test_every_html_email_shows_a_hostile_pod_name_as_text(settings: Settings) -> None:
    emails = every_kind(pod_name=HOSTILE, pod_address=HOSTILE)
    assert sorted(e.kind for e in emails) == sorted(
        [
            "access_code",
            "pod_unavailable",
            "receipt",
            "payment_failed",
            "payment_failed_operator",
            "lock_failed",
            "operator_alert",
        ]
    )
    for email in emails:
        message = build_message(email, settings)
        html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert "<script>" not in html, email.kind
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, email.kind
        # The plain text is not HTML: it shows the name as it is.
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert HOSTILE in text, email.kind
    access = build_message(emails[0], settings).get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert 'href="https://pods.example.com/end-session?a=1&amp;b=2"' in access


def test_queued_payloads_keep_the_json_of_earlier_releases() -> None:
    """Rows already in an outbox were written with these keys; new rows are the same."""
    [receipt] = email_manager.settlement_emails(
        session(), cost_pence=263, status=PaymentStatus.SUCCEEDED, error=None, operator=None
    )
    assert receipt.payload == {
        "session_id": str(SESSION_ID),
        "pod_name": "pod1",
        "start_time": "2026-11-26T15:05:00+00:00",
        "end_time": "2026-11-26T15:15:30+00:00",
        "duration_seconds": 630,
        "cost_pence": 263,
        "currency": "gbp",
        "payment_status": "succeeded",
        # Added for the VAT invoice's description; rows without it still render.
        "pod_address": "1 Demo Street, London",
    }
    assert access_code().payload == {
        "access_code": "042917",
        "pod_name": "pod1",
        "pod_address": "1 Demo Street, London",
        "price_per_minute": "0.2500",
        "currency": "gbp",
        "end_session_url": f"https://pods.example.com/end-session?sessionId={SESSION_ID}",
        "smart_lock": False,
        "start_time": START.isoformat(),
    }


def test_an_access_code_queued_before_smart_locks_still_renders(settings: Settings) -> None:
    """As an older release queued it: no smart_lock, and the start time as Postgres adds it."""
    email = OutboxEmail(
        id=7,
        dedupe_key=f"access_code:{SESSION_ID}",
        kind="access_code",
        recipient="ada@example.com",
        payload={
            "access_code": "042917",
            "pod_name": "pod1",
            "pod_address": "1 Demo Street, London",
            "price_per_minute": "0.2500",
            "currency": "gbp",
            "end_session_url": "https://pods.example.com/end-session",
            "start_time": "2026-11-26T15:05:00.123456+00:00",
        },
        attempts=3,
    )
    text = build_message(email, settings).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Your door code for pod1 is 042917.\n\nAddress: 1 Demo Street, London\n\n" in text
    assert "Started: 26 November 2026, 3:05pm" in text


@pytest.mark.parametrize(
    ("kind", "payload", "problem"),
    [
        (
            "receipt",
            {"pod_name": "pod1"},
            "a queued 'receipt' e-mail is invalid: session_id: Field required;",
        ),
        ("postcard", {}, "a queued 'postcard' e-mail is invalid: kind: Input tag 'postcard'"),
        (
            "access_code",
            {**access_code().payload, "start_time": None},
            "a queued 'access_code' e-mail is invalid: start_time: missing",
        ),
    ],
)
async def test_an_invalid_payload_is_refused_and_the_others_still_go(
    settings: Settings, kind: str, payload: dict[str, object], problem: str
) -> None:
    bad = OutboxEmail(
        id=2, dedupe_key="bad", kind=kind, recipient="a@b.c", payload=payload, attempts=1
    )
    with pytest.raises(email_manager.EmailPayloadInvalid) as refused:
        compose(bad, settings)
    assert str(refused.value).startswith(problem)
    outcomes = await Mailer(settings, FileSender(settings.OUTBOX_DIR)).send_all(
        [bad, access_code()]
    )
    assert [str(outcome) if outcome else None for outcome in outcomes] == [str(refused.value), None]
    [path] = list(settings.OUTBOX_DIR.glob("*.eml"))
    assert path.name.endswith("-000001-access_code.eml")


RECEIPT_TEXT = (
    "Thank you for using pod1.\n\n"
    "From 26 November 2026, 3:05pm to 26 November 2026, 3:15pm (10 min 30 s).\n\n"
    "{charge}\n{hold}"
    f"\nSession: {SESSION_ID}\n"
)


def receipt_text(
    settings: Settings,
    record: SessionRecord,
    *,
    cost_pence: int = 263,
    status: PaymentStatus = PaymentStatus.SUCCEEDED,
    **hold: int,
) -> str:
    [receipt] = email_manager.settlement_emails(
        record, cost_pence=cost_pence, status=status, error=None, operator=None, **hold
    )
    message = build_message(outbox(receipt), settings)
    return str(message.get_body(("plain",)).get_content())  # type: ignore[union-attr]


def test_a_receipt_with_a_hold_says_what_was_held_captured_and_released(
    settings: Settings,
) -> None:
    text = receipt_text(settings, session(hold_pence=1500), captured_pence=263, released_pence=1237)
    assert text == RECEIPT_TEXT.format(
        charge="Charged: £2.63 to your saved card.",
        hold="Held at booking: £15.00; captured: £2.63; released: £12.37.\n",
    )


def test_a_hold_released_whole_is_on_the_receipt_of_a_session_not_charged(
    settings: Settings,
) -> None:
    text = receipt_text(
        settings,
        session(hold_pence=1500),
        cost_pence=0,
        status=PaymentStatus.NOT_CHARGED,
        captured_pence=0,
        released_pence=1500,
    )
    assert text == RECEIPT_TEXT.format(
        charge="Not charged: £0.00 is below our minimum charge of £0.30.",
        hold="Held at booking: £15.00; captured: £0.00; released: £15.00.\n",
    )


def test_a_receipt_without_a_hold_has_no_hold_line(settings: Settings) -> None:
    text = receipt_text(settings, session())
    assert text == RECEIPT_TEXT.format(charge="Charged: £2.63 to your saved card.", hold="")
    assert "Held at booking" not in text


def hold_declined(pod_name: str, reason: str) -> OutboxEmail:
    queued = email_manager.hold_declined_email(
        setup_intent_id="seti_1",
        recipient="ada@example.com",
        pod_name=pod_name,
        hold_pence=1500,
        currency="gbp",
        reason=reason,
    )
    assert (queued.kind, queued.recipient, queued.dedupe_key) == (
        "hold_declined",
        "ada@example.com",
        "hold_declined:seti_1",
    )
    return outbox(queued)


def test_a_declined_hold_tells_the_customer_nothing_started_and_nothing_is_held(
    settings: Settings,
) -> None:
    message = build_message(hold_declined("pod1", "Your card was declined"), settings)
    assert message["Subject"] == "Your session in pod1 did not start"
    assert message["To"] == "ada@example.com"
    assert message.get_body(("plain",)).get_content() == (  # type: ignore[union-attr]
        "Sorry: your card could not hold £15.00 for your booking of pod1 (Your card was "
        "declined), so your session did not start.\n\nNothing was charged and nothing is held "
        "on your card. Please book again with another card.\n"
    )


def test_a_declined_hold_shows_a_hostile_pod_name_and_reason_as_text(settings: Settings) -> None:
    message = build_message(hold_declined(HOSTILE, HOSTILE), settings)
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<script>" not in html
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert (
        f"<p>Sorry: your card could not hold £15.00 for your booking of {escaped} ({escaped}), "
        "so your session did not start.</p>"
    ) in html
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert f"booking of {HOSTILE} ({HOSTILE})" in text


@pytest.mark.parametrize(
    ("out_of_service", "subject", "text"),
    [
        (
            None,
            "pod1 was just taken",
            "Sorry: someone started a session in pod1 moments before you, so your session did "
            "not start.\n\nYou have not been charged. Please choose another pod or try again "
            "later.\n",
        ),
        (
            "its door lock is offline",
            "pod1 is out of service",
            "Sorry: pod1 went out of service (its door lock is offline) just after you saved "
            "your card, so your session did not start.\n\nYou have not been charged, and any "
            "amount held on your card for this booking is released. Please choose another "
            "pod.\n",
        ),
    ],
)
def test_a_session_that_did_not_start_says_whether_the_pod_was_taken_or_out_of_service(
    settings: Settings, out_of_service: str | None, subject: str, text: str
) -> None:
    queued = email_manager.pod_unavailable_email(
        setup_intent_id="seti_1",
        recipient="ada@example.com",
        pod_name="pod1",
        out_of_service=out_of_service,
    )
    message = build_message(outbox(queued), settings)
    assert message["Subject"] == subject
    assert message.get_body(("plain",)).get_content() == text  # type: ignore[union-attr]
