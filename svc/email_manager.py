"""E-mail: the messages (plain text and HTML) and their delivery.

Messages are queued in the database's outbox by the booking code (with the data they
need, as JSON) and rendered here when they are sent, by SMTP, or in local mode without
SMTP settings to `.eml` files in OUTBOX_DIR.
"""

import asyncio
import hashlib
import html
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from email.charset import QP, Charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import formatdate
from pathlib import Path
from typing import Any
from uuid import UUID

import aiosmtplib

from svc.env import Settings
from svc.records import OutboxEmail, QueuedEmail, SessionRecord
from svc.types import PaymentStatus, SmtpSecurity
from svc.utils import format_duration, format_local_time, format_money, format_price_per_minute

logger = logging.getLogger(__name__)


class EmailNotSent(Exception):
    """The message could not be handed over; it stays queued and is tried again."""


_SMTP_TROUBLE = (aiosmtplib.SMTPException, OSError, TimeoutError)


# What to queue. Each message has a dedupe key naming its purpose, so it is queued once.


def access_code_email(
    *,
    session_id: UUID,
    recipient: str,
    access_code: str,
    pod_name: str,
    pod_address: str,
    price_per_minute: Decimal,
    currency: str,
    end_session_url: str,
    smart_lock: bool = False,
) -> QueuedEmail:
    """The start time is added by the database when the session really opens."""
    return QueuedEmail(
        dedupe_key=f"access_code:{session_id}",
        kind="access_code",
        recipient=recipient,
        payload={
            "access_code": access_code,
            "pod_name": pod_name,
            "pod_address": pod_address,
            "price_per_minute": str(price_per_minute),
            "currency": currency,
            "end_session_url": end_session_url,
            "smart_lock": smart_lock,
        },
    )


def pod_unavailable_email(*, setup_intent_id: str, recipient: str, pod_name: str) -> QueuedEmail:
    return QueuedEmail(
        dedupe_key=f"pod_unavailable:{setup_intent_id}",
        kind="pod_unavailable",
        recipient=recipient,
        payload={"pod_name": pod_name},
    )


def _session_facts(session: SessionRecord, cost_pence: int) -> dict[str, Any]:
    end = session.end_time or session.now
    return {
        "session_id": str(session.id),
        "pod_name": session.pod_name,
        "start_time": session.start_time.isoformat(),
        "end_time": end.isoformat(),
        "duration_seconds": max(0, int((end - session.start_time).total_seconds())),
        "cost_pence": cost_pence,
        "currency": session.currency,
    }


def settlement_emails(
    session: SessionRecord,
    *,
    cost_pence: int,
    status: PaymentStatus,
    error: str | None,
    operator: str | None,
) -> list[QueuedEmail]:
    """What goes out when a session's payment reaches an outcome."""
    facts = _session_facts(session, cost_pence)
    emails = []
    if status in (PaymentStatus.SUCCEEDED, PaymentStatus.NOT_CHARGED):
        if session.user_email:
            emails.append(
                QueuedEmail(
                    dedupe_key=f"receipt:{session.id}",
                    kind="receipt",
                    recipient=session.user_email,
                    payload={**facts, "payment_status": status.value},
                )
            )
    elif status in (PaymentStatus.FAILED, PaymentStatus.REQUIRES_ACTION):
        if session.user_email:
            emails.append(
                QueuedEmail(
                    dedupe_key=f"payment_failed:{session.id}",
                    kind="payment_failed",
                    recipient=session.user_email,
                    payload={**facts, "error": error or ""},
                )
            )
        if operator:
            emails.append(
                QueuedEmail(
                    dedupe_key=f"payment_failed_operator:{session.id}",
                    kind="payment_failed_operator",
                    recipient=operator,
                    payload={
                        **facts,
                        "error": error or "",
                        "customer_email": session.user_email or "",
                        "stripe_customer_id": session.stripe_customer_id,
                    },
                )
            )
    return emails


def lock_failed_emails(
    session: SessionRecord, *, reason: str, operator: str | None
) -> list[QueuedEmail]:
    """The code never reached the pod's lock: the session is ended, nothing is charged."""
    emails = []
    if session.user_email:
        emails.append(
            QueuedEmail(
                dedupe_key=f"lock_failed:{session.id}",
                kind="lock_failed",
                recipient=session.user_email,
                payload={"pod_name": session.pod_name},
            )
        )
    emails += operator_alert(
        dedupe_key=f"lock_failed_operator:{session.id}",
        operator=operator,
        subject=f"the lock of {session.pod_name} did not take a code; session ended",
        text=f"The access code of session {session.id} could not be put on the lock of "
        f"{session.pod_name} (Seam device {session.seam_device_id}): {reason}. The session "
        "was ended without charge, the pod is free again and the customer "
        f"({session.user_email or 'no e-mail'}) has been told.",
    )
    return emails


def code_not_removed_alert(
    session: SessionRecord, *, reason: str, expires: str, operator: str | None
) -> list[QueuedEmail]:
    return operator_alert(
        dedupe_key=f"lock_code_not_removed:{session.id}",
        operator=operator,
        subject=f"an ended session's code is still on the lock of {session.pod_name}",
        text=f"The access code of session {session.id} could not be taken off the lock of "
        f"{session.pod_name} (Seam device {session.seam_device_id}, access code "
        f"{session.access_code_id}): {reason}. The service keeps trying; the lock stops "
        f"taking the code by itself at {expires}. The charge and the receipt were not held "
        "up by this.",
    )


def operator_alert(
    *, dedupe_key: str, operator: str | None, subject: str, text: str
) -> list[QueuedEmail]:
    if not operator:
        logger.warning("operator.no_address subject=%s", subject)
        return []
    return [
        QueuedEmail(
            dedupe_key=dedupe_key,
            kind="operator_alert",
            recipient=operator,
            payload={"subject": subject, "text": text},
        )
    ]


# How each kind reads.


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    paragraphs: list[str]
    link: tuple[str, str] | None = None  # (label, url)
    highlight: str | None = None  # the one thing to see at a glance (the door code)


def _when(value: str, settings: Settings) -> str:
    return format_local_time(datetime.fromisoformat(value), settings.timezone)


def _render_access_code(p: dict[str, Any], settings: Settings) -> Rendered:
    price = format_price_per_minute(Decimal(p["price_per_minute"]), p["currency"])
    # Messages queued before smart locks existed have no "smart_lock".
    lock = (
        ["The door's smart lock is receiving this code now; it works within a minute or so."]
        if p.get("smart_lock")
        else []
    )
    return Rendered(
        subject=f"Your Qwip access code for {p['pod_name']}",
        highlight=p["access_code"],
        paragraphs=[
            f"Your door code for {p['pod_name']} is {p['access_code']}.",
            *lock,
            f"Address: {p['pod_address']}",
            f"Started: {_when(p['start_time'], settings)}",
            f"Price: {price}, charged to your saved card when you end the session.",
            "When you leave, end your session with the link below so that you only pay "
            "for the minutes you used.",
        ],
        link=("End my session", p["end_session_url"]),
    )


def _render_pod_unavailable(p: dict[str, Any], settings: Settings) -> Rendered:
    return Rendered(
        subject=f"{p['pod_name']} was just taken",
        paragraphs=[
            f"Sorry: someone started a session in {p['pod_name']} moments before you, so "
            "your session did not start.",
            "You have not been charged. Please choose another pod or try again later.",
        ],
    )


def _render_lock_failed(p: dict[str, Any], settings: Settings) -> Rendered:
    return Rendered(
        subject=f"Your Qwip session in {p['pod_name']} could not start",
        paragraphs=[
            f"Sorry: the door lock of {p['pod_name']} did not accept your access code, so the "
            "code we sent you will not open the door.",
            "Your session has been ended and you have not been charged. Please try again in "
            "a few minutes or choose another pod.",
        ],
    )


def _render_receipt(p: dict[str, Any], settings: Settings) -> Rendered:
    amount = format_money(p["cost_pence"], p["currency"])
    if p["payment_status"] == PaymentStatus.SUCCEEDED:
        outcome = f"Charged: {amount} to your saved card."
    else:
        minimum = format_money(settings.MINIMUM_CHARGE_PENCE, p["currency"])
        outcome = f"Not charged: {amount} is below our minimum charge of {minimum}."
    return Rendered(
        subject=f"Your Qwip receipt for {p['pod_name']}: {amount}",
        paragraphs=[
            f"Thank you for using {p['pod_name']}.",
            f"From {_when(p['start_time'], settings)} to {_when(p['end_time'], settings)} "
            f"({format_duration(p['duration_seconds'])}).",
            outcome,
            f"Session: {p['session_id']}",
        ],
    )


def _render_payment_failed(p: dict[str, Any], settings: Settings) -> Rendered:
    amount = format_money(p["cost_pence"], p["currency"])
    return Rendered(
        subject=f"We could not charge your card for {p['pod_name']}",
        paragraphs=[
            f"Your session in {p['pod_name']} has ended "
            f"({format_duration(p['duration_seconds'])}), but the charge of {amount} to your "
            "saved card did not go through.",
            f"Reason: {p['error']}",
            "We will be in touch about paying the amount owed. Session: " + p["session_id"],
        ],
    )


def _render_payment_failed_operator(p: dict[str, Any], settings: Settings) -> Rendered:
    amount = format_money(p["cost_pence"], p["currency"])
    return Rendered(
        subject=f"Payment failed: {amount} owed for {p['pod_name']}",
        paragraphs=[
            f"Session {p['session_id']} in {p['pod_name']} ended and its charge failed.",
            f"Amount owed: {amount}",
            f"Reason: {p['error']}",
            f"Customer: {p['customer_email'] or 'no e-mail'} (Stripe {p['stripe_customer_id']})",
        ],
    )


def _render_operator_alert(p: dict[str, Any], settings: Settings) -> Rendered:
    return Rendered(subject=f"qwipsvc: {p['subject']}", paragraphs=[p["text"]])


_RENDERERS: dict[str, Callable[[dict[str, Any], Settings], Rendered]] = {
    "access_code": _render_access_code,
    "pod_unavailable": _render_pod_unavailable,
    "lock_failed": _render_lock_failed,
    "receipt": _render_receipt,
    "payment_failed": _render_payment_failed,
    "payment_failed_operator": _render_payment_failed_operator,
    "operator_alert": _render_operator_alert,
}


# UTF-8 bodies as quoted-printable: an .eml in the local outbox stays readable as text.
_UTF8_READABLE = Charset("utf-8")
_UTF8_READABLE.body_encoding = QP


@dataclass(frozen=True, slots=True)
class Composed:
    subject: str
    text: str
    raw: bytes  # the whole message, as handed to SMTP or written to a file


def compose(email: OutboxEmail, settings: Settings) -> Composed:
    """The message as MIME: plain text plus HTML.

    Built with the email package's compat32 classes, which do the same job at a third
    of the CPU of EmailMessage's header folding: the difference shows when a hundred
    receipts go out at once.
    """
    rendered = _RENDERERS[email.kind](email.payload, settings)
    paragraphs = list(rendered.paragraphs)
    if rendered.link:
        paragraphs.append(f"{rendered.link[0]}: {rendered.link[1]}")
    text = "\n\n".join(paragraphs) + "\n"

    message = MIMEMultipart("alternative")
    subject = rendered.subject
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8").encode()
    message["From"] = f"Qwip <{settings.email_sender}>"
    message["To"] = email.recipient
    message["Date"] = formatdate(localtime=False)
    # The same id on every attempt, so a mail system can drop a repeat delivery.
    digest = hashlib.sha256(email.dedupe_key.encode()).hexdigest()[:32]
    message["Message-ID"] = f"<{digest}@qwip>"
    message["X-Qwip-Kind"] = email.kind
    for subtype, body in (("plain", text), ("html", _html(rendered))):
        part = MIMENonMultipart("text", subtype)
        part.set_payload(body, _UTF8_READABLE)
        message.attach(part)
    return Composed(subject=rendered.subject, text=text, raw=message.as_bytes())


def _html(rendered: Rendered) -> str:
    parts = [f"<p>{html.escape(paragraph)}</p>" for paragraph in rendered.paragraphs]
    if rendered.highlight:
        parts.insert(
            0,
            '<p style="font-size:32px;font-weight:bold;letter-spacing:6px;margin:16px 0">'
            f"{html.escape(rendered.highlight)}</p>",
        )
    if rendered.link:
        label, url = rendered.link
        parts.append(f'<p><a href="{html.escape(url, quote=True)}">{html.escape(label)}</a></p>')
    return (
        '<!doctype html><html><body style="font-family:system-ui,sans-serif;line-height:1.5">'
        + "".join(parts)
        + "</body></html>"
    )


class Mailer:
    """Hands messages to SMTP, or in local mode without SMTP to files in OUTBOX_DIR."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def send(self, email: OutboxEmail) -> None:
        [failure] = await self.send_all([email])
        if failure is not None:
            raise failure

    async def send_all(self, emails: Sequence[OutboxEmail]) -> list[EmailNotSent | None]:
        """Send each message, over one SMTP connection; what went wrong with each, in order.

        One connection for the lot: a burst of receipts then costs one handshake (and one
        login to Gmail, which counts them) instead of one each.
        """
        composed = [compose(email, self._settings) for email in emails]
        if not self._settings.uses_smtp:
            for email, message in zip(emails, composed, strict=True):
                await asyncio.to_thread(self._write_file, email, message)
            return [None] * len(emails)
        return await self._send_smtp(
            [(email.recipient, message) for email, message in zip(emails, composed, strict=True)]
        )

    async def _send_smtp(self, messages: list[tuple[str, Composed]]) -> list[EmailNotSent | None]:
        settings = self._settings
        password = settings.EMAIL_PASSWORD.get_secret_value() if settings.EMAIL_PASSWORD else None
        client = aiosmtplib.SMTP(
            hostname=settings.SMTP_HOST,
            port=settings.SMTP_PORT,
            username=settings.email_sender if password else None,
            password=password,
            use_tls=settings.SMTP_SECURITY is SmtpSecurity.SSL,
            start_tls=settings.SMTP_SECURITY is SmtpSecurity.STARTTLS,
            timeout=settings.SMTP_TIMEOUT_SECONDS,
        )
        try:
            await client.connect()
        except _SMTP_TROUBLE as error:
            failure = EmailNotSent(f"{type(error).__name__}: {error}")
            return [failure] * len(messages)
        outcomes: list[EmailNotSent | None] = []
        try:
            for recipient, message in messages:
                if not client.is_connected:
                    outcomes.append(EmailNotSent("SMTPServerDisconnected: connection lost"))
                    continue
                try:
                    await client.sendmail(settings.email_sender, [recipient], message.raw)
                except _SMTP_TROUBLE as error:
                    outcomes.append(EmailNotSent(f"{type(error).__name__}: {error}"))
                else:
                    outcomes.append(None)
        finally:
            try:
                await client.quit()
            except _SMTP_TROUBLE:
                client.close()
        return outcomes

    def _write_file(self, email: OutboxEmail, composed: Composed) -> None:
        folder: Path = self._settings.OUTBOX_DIR
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = folder / f"{stamp}-{email.id:06d}-{email.kind}.eml"
        path.write_bytes(composed.raw)
        # Local mode only: the outbox is the developer's inbox, so the text is shown.
        logger.info(
            "email.written path=%s to=%s subject=%s\n%s",
            path,
            email.recipient,
            composed.subject,
            composed.text,
        )
