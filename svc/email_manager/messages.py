"""What to queue. Each message has a dedupe key naming its purpose, so it is queued once."""

import logging
from datetime import timedelta
from decimal import Decimal
from uuid import UUID

from svc.email_manager.schemas import (
    AccessCodeEmail,
    BackupCodeEmail,
    DebtOutstandingEmail,
    EmailPayload,
    HoldDeclinedEmail,
    LockFailedEmail,
    OperatorAlertEmail,
    PaymentFailedEmail,
    PaymentFailedOperatorEmail,
    PodUnavailableEmail,
    ReceiptEmail,
    ReminderEmail,
    stored,
)
from svc.models.records import OutboxEmail, QueuedEmail, SessionRecord
from svc.types import PaymentStatus

logger = logging.getLogger(__name__)


def queued(payload: EmailPayload, *, dedupe_key: str, recipient: str) -> QueuedEmail:
    return QueuedEmail(
        dedupe_key=dedupe_key, kind=payload.kind, recipient=recipient, payload=stored(payload)
    )


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
    payload = AccessCodeEmail(
        access_code=access_code,
        pod_name=pod_name,
        pod_address=pod_address,
        price_per_minute=price_per_minute,
        currency=currency,
        end_session_url=end_session_url,
        smart_lock=smart_lock,
    )
    return queued(payload, dedupe_key=f"access_code:{session_id}", recipient=recipient)


def pod_unavailable_email(
    *, setup_intent_id: str, recipient: str, pod_name: str, out_of_service: str | None = None
) -> QueuedEmail:
    return queued(
        PodUnavailableEmail(pod_name=pod_name, out_of_service=out_of_service),
        dedupe_key=f"pod_unavailable:{setup_intent_id}",
        recipient=recipient,
    )


def hold_declined_email(
    *,
    setup_intent_id: str,
    recipient: str,
    pod_name: str,
    hold_pence: int,
    currency: str,
    reason: str,
) -> QueuedEmail:
    return queued(
        HoldDeclinedEmail(
            pod_name=pod_name, hold_pence=hold_pence, currency=currency, reason=reason
        ),
        dedupe_key=f"hold_declined:{setup_intent_id}",
        recipient=recipient,
    )


def debt_outstanding_email(
    *,
    setup_intent_id: str,
    recipient: str,
    pod_name: str,
    owed_pence: int,
    currency: str,
    pay_url: str,
) -> QueuedEmail:
    return queued(
        DebtOutstandingEmail(
            pod_name=pod_name, owed_pence=owed_pence, currency=currency, pay_url=pay_url
        ),
        dedupe_key=f"debt_outstanding:{setup_intent_id}",
        recipient=recipient,
    )


def _session_facts(session: SessionRecord, cost_pence: int) -> dict[str, object]:
    end = session.end_time or session.now
    return {
        "session_id": session.id,
        "pod_name": session.pod_name,
        "start_time": session.start_time,
        "end_time": end,
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
    captured_pence: int | None = None,
    released_pence: int | None = None,
    max_minutes: int | None = None,
    paid_later_pence: int | None = None,
    pay_url: str | None = None,
) -> list[QueuedEmail]:
    """What goes out when a session's payment reaches an outcome. A session that lasted
    `max_minutes` was ended by the service at the limit, and its receipt says so;
    `paid_later_pence`: what was paid on the pay page after the charge failed."""
    facts = _session_facts(session, cost_pence)
    customer = session.user_email
    emails = []
    if status in (PaymentStatus.SUCCEEDED, PaymentStatus.NOT_CHARGED):
        if customer:
            hold = {}
            if session.hold_pence is not None:
                hold = {
                    "hold_pence": session.hold_pence,
                    "captured_pence": captured_pence,
                    "released_pence": released_pence,
                }
            lasted = (session.end_time or session.now) - session.start_time
            at_limit = max_minutes is not None and lasted >= timedelta(minutes=max_minutes)
            later = {} if paid_later_pence is None else {"paid_later_pence": paid_later_pence}
            receipt = ReceiptEmail.model_validate(
                {
                    **facts,
                    "payment_status": status,
                    **hold,
                    "ended_at_limit": at_limit or None,
                    **later,
                    "pod_address": session.pod_address,
                }
            )
            emails.append(queued(receipt, dedupe_key=f"receipt:{session.id}", recipient=customer))
    elif status in (PaymentStatus.FAILED, PaymentStatus.REQUIRES_ACTION):
        if customer:
            failed = PaymentFailedEmail.model_validate(
                {**facts, "error": error or "", "pay_url": pay_url}
            )
            emails.append(
                queued(failed, dedupe_key=f"payment_failed:{session.id}", recipient=customer)
            )
        if operator:
            owed = PaymentFailedOperatorEmail.model_validate(
                {
                    **facts,
                    "error": error or "",
                    "customer_email": customer or "",
                    "stripe_customer_id": session.stripe_customer_id,
                    "pay_url": pay_url,
                }
            )
            emails.append(
                queued(owed, dedupe_key=f"payment_failed_operator:{session.id}", recipient=operator)
            )
    return emails


def lock_failed_emails(
    session: SessionRecord, *, reason: str, operator: str | None
) -> list[QueuedEmail]:
    """The code never reached the pod's lock: the session is ended, nothing is charged."""
    emails = []
    if session.user_email:
        emails.append(
            queued(
                LockFailedEmail(pod_name=session.pod_name),
                dedupe_key=f"lock_failed:{session.id}",
                recipient=session.user_email,
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


def backup_code_emails(
    session: SessionRecord, *, backup_code: str, end_session_url: str, operator: str | None
) -> list[QueuedEmail]:
    """The session's code did not reach the lock: the customer gets a backup code and the
    session goes on; the operator is told of the lock."""
    emails = []
    if session.user_email:
        payload = BackupCodeEmail(
            backup_code=backup_code, pod_name=session.pod_name, end_session_url=end_session_url
        )
        emails.append(
            queued(payload, dedupe_key=f"backup_code:{session.id}", recipient=session.user_email)
        )
    emails += operator_alert(
        dedupe_key=f"backup_code_operator:{session.id}",
        operator=operator,
        subject=f"the lock of {session.pod_name} did not set a code; a backup code is in use",
        text=f"The access code of session {session.id} (access code {session.access_code_id}) "
        f"did not set on the lock of {session.pod_name} (Seam device {session.seam_device_id}). "
        "A code from the lock's backup pool was sent to the customer instead; the session goes "
        "on and is billed as usual. Check the lock.",
    )
    return emails


def reminder_email(
    session: SessionRecord, *, cost_pence: int, max_minutes: int, end_session_url: str
) -> list[QueuedEmail]:
    """The customer's one warning that the service will end the session at the limit."""
    if not session.user_email:
        return []
    payload = ReminderEmail(
        pod_name=session.pod_name,
        cost_pence=cost_pence,
        currency=session.currency,
        ends_at=session.start_time + timedelta(minutes=max_minutes),
        end_session_url=end_session_url,
    )
    return [queued(payload, dedupe_key=f"reminder:{session.id}", recipient=session.user_email)]


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


# The words of each incident a lock reports: the subject's end, then what it means.
_LOCK_INCIDENTS = {
    "offline": (
        "is offline",
        "Seam reports the lock offline. The pod cannot be booked until Seam reports it "
        "connected again; a session already running goes on. Check the lock's power and its "
        "connection (Wi-Fi or bridge).",
    ),
    "low_battery": (
        "has a low battery",
        "Seam reports the lock's battery low{level}. Replace the batteries before the lock "
        "stops taking codes.",
    ),
    "tampered": (
        "reports tampering",
        "Seam reports that the lock detected tampering (opened or moved). Check the door.",
    ),
}


def lock_incident_alert(
    *,
    dedupe_key: str,
    operator: str | None,
    incident: str,
    device_id: str,
    pod_names: list[str],
    battery_level: Decimal | None = None,
) -> list[QueuedEmail]:
    """The operator's e-mail about a lock's incident (offline, low battery, tampered)."""
    ending, meaning = _LOCK_INCIDENTS[incident]
    pods = ", ".join(pod_names) or "no pod"
    level = f" ({int(battery_level * 100)}%)" if battery_level is not None else ""
    return operator_alert(
        dedupe_key=dedupe_key,
        operator=operator,
        subject=f"the lock of {pods} {ending}",
        text=f"Pod {pods}, Seam device {device_id}: {meaning.format(level=level)}",
    )


def operator_alert(
    *, dedupe_key: str, operator: str | None, subject: str, text: str
) -> list[QueuedEmail]:
    if not operator:
        logger.warning("operator.no_address subject=%s", subject)
        return []
    return [
        queued(
            OperatorAlertEmail(subject=subject, text=text),
            dedupe_key=dedupe_key,
            recipient=operator,
        )
    ]


DEAD_LETTER_KEY = "dead_letter:"

# What the operator can do about each kind of message that was never delivered.
_DEAD_LETTER_ADVICE = {
    "access_code": "The customer never received their door code by e-mail (the booking page "
    "showed it to them). If they cannot get in, reach them through their Stripe Customer.",
    "pod_unavailable": "The customer was not told by e-mail that their session did not start; "
    "their card was not charged.",
    "receipt": "The customer has no receipt: send them one from the Stripe Dashboard if they "
    "ask.",
    "payment_failed": "The customer was not told that their payment failed: the amount is "
    "still owed. Reach them through their Stripe Customer.",
    "hold_declined": "The customer was not told by e-mail that their card could not hold the "
    "booking's amount and that no session started; nothing was charged.",
    "debt_outstanding": "The customer was not told by e-mail why their booking did not start "
    "(an earlier session is still owed); nothing was charged or held for it.",
    "lock_failed": "The customer was not told that their code did not reach the lock; their "
    "session was ended without charge.",
    "backup_code": "The customer never received the backup code that replaced the code the "
    "lock did not take, and may not be able to get in: reach them through their Stripe "
    "Customer.",
    "reminder": "The customer was not reminded that their session would end at the limit.",
    "refund": "The customer was not told by e-mail of their refund; the money was refunded "
    "all the same (Stripe shows it).",
}
_OPERATOR_ADVICE = (
    "This message was meant for you: check OPERATOR_EMAIL and the mail settings, and read "
    "the message in the email_outbox table."
)


def dead_letter_alert(
    email: OutboxEmail, *, reason: str, hopeless: bool, operator: str | None
) -> list[QueuedEmail]:
    """The operator's notice that a message was set aside for good. It names the kind, the
    recipient and the reason, never the message's content (an access code among them).
    A notice that dies itself gets no notice of its own (the database also refuses one)."""
    if email.dedupe_key.startswith(DEAD_LETTER_KEY):
        logger.error("email.dead_notice id=%s", email.id)
        return []
    if hopeless:
        why = "the recipient is not an e-mail address, so no attempt could ever deliver it"
    else:
        why = f"it could not be sent in {email.attempts} attempts"
    advice = _DEAD_LETTER_ADVICE.get(email.kind)
    if advice is None:
        advice = _OPERATOR_ADVICE
    else:
        advice += " If the address is wrong, correct it on their Stripe Customer."
    return operator_alert(
        dedupe_key=f"{DEAD_LETTER_KEY}{email.id}",
        operator=operator,
        subject=f"an e-mail ({email.kind}) could not be delivered",
        text=f"The {email.kind!r} e-mail {email.dedupe_key} to {email.recipient!r} was set "
        f"aside for good: {why}. The last error: {reason}\n\n{advice} The service will "
        f"not send it again (email_outbox id {email.id}, dead_at set).",
    )
