"""A session's story for the operator, in order: booked, hold, code e-mailed, code on the
lock (or the backup code), the first unlock, the overstay reminder, end, charge or capture,
refunds, a dispute, and every e-mail sent. Built from what the database keeps, in one
place: a new kind of fact is one more function below, added to `build_timeline`."""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from svc.models.operator import SessionDetails, SessionEmail, SessionRefund
from svc.types import AccessCodeStatus, PaymentStatus
from svc.utils import elapsed_seconds, format_duration, format_money, format_price_per_minute

# What each e-mail kind is, for a line of the timeline.
EMAIL_NAMES = {
    "access_code": "access code",
    "receipt": "receipt",
    "payment_failed": "payment failed",
    "payment_failed_operator": "payment failed (operator)",
    "lock_failed": "lock failed",
    "operator_alert": "operator alert",
    "backup_code": "backup code",
    "backup_code_operator": "backup code (operator)",
    "reminder": "overstay reminder",
    "refund_operator": "refund (operator)",
    "dispute_operator": "dispute (operator)",
}


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One line of the story: when (None: not known), what kind, and in words."""

    at: datetime | None
    kind: str
    text: str

    def as_json(self) -> dict[str, str | None]:
        return {
            "at": self.at.isoformat() if self.at else None,
            "kind": self.kind,
            "text": self.text,
        }


def build_timeline(
    details: SessionDetails,
    emails: Iterable[SessionEmail],
    refunds: Sequence[SessionRefund] = (),
) -> list[TimelineEvent]:
    """Every event of the session, oldest first; those of no time (what it is still
    waiting for) last."""
    events = [
        *_booking(details),
        *_lock(details),
        *_backup_code(details),
        *_unlocks(details),
        *_reminder(details),
        *_end(details),
        *_payment(details),
        *(_refund(refund, details) for refund in refunds),
        *_dispute(details),
        *(_email(email) for email in emails),
    ]
    # Stable: events of one moment keep the order above (booked before its hold).
    start = details.session.start_time
    return sorted(events, key=lambda event: (event.at is None, event.at or start))


def _money(pence: int, details: SessionDetails) -> str:
    return format_money(pence, details.session.currency)


def _booking(details: SessionDetails) -> Iterator[TimelineEvent]:
    session = details.session
    who = session.user_email or "no e-mail address"
    price = format_price_per_minute(session.price_per_minute, session.currency)
    free = f", first {session.free_minutes} min free" if session.free_minutes else ""
    yield TimelineEvent(
        session.start_time, "booked", f"booked {session.pod_name} by {who}, {price}{free}"
    )
    if session.hold_pence is not None:
        yield TimelineEvent(
            session.start_time,
            "hold",
            f"{_money(session.hold_pence, details)} held on the card "
            f"({session.hold_payment_intent_id})",
        )


def _lock(details: SessionDetails) -> Iterator[TimelineEvent]:
    session = details.session
    if session.seam_device_id is None:
        return
    if details.code_set_at is not None:
        yield TimelineEvent(
            details.code_set_at, "code_on_lock", f"code set on the lock {session.seam_device_id}"
        )
    elif session.access_code_status == AccessCodeStatus.FAILED:
        yield TimelineEvent(
            session.end_time, "code_on_lock", "the lock never took the code: not charged"
        )
    else:
        status = session.access_code_status or "pending"
        yield TimelineEvent(None, "code_on_lock", f"code not on the lock yet ({status})")


def _backup_code(details: SessionDetails) -> Iterator[TimelineEvent]:
    if details.backup_access_code_id is None:
        return
    yield TimelineEvent(
        details.backup_code_at,
        "backup_code",
        f"backup code handed out from the lock's pool ({details.backup_access_code_id}): "
        "the session's own code did not reach the lock",
    )


def _unlocks(details: SessionDetails) -> Iterator[TimelineEvent]:
    if details.first_unlocked_at is None:
        return
    count = details.unlock_count
    yield TimelineEvent(
        details.first_unlocked_at,
        "unlock",
        f"first unlock of the door with the code; {count} unlock{'' if count == 1 else 's'} "
        "in all",
    )


def _reminder(details: SessionDetails) -> Iterator[TimelineEvent]:
    if details.reminded_at is None:
        return
    who = details.session.user_email or "the customer"
    yield TimelineEvent(
        details.reminded_at,
        "reminder",
        f"overstay reminder sent to {who}: the session nears its time limit",
    )


def _end(details: SessionDetails) -> Iterator[TimelineEvent]:
    session = details.session
    if session.end_time is None:
        running = format_duration(elapsed_seconds(session.start_time, session.now))
        yield TimelineEvent(None, "open", f"open for {running} so far")
        return
    took = format_duration(elapsed_seconds(session.start_time, session.end_time))
    text = f"ended after {took}"
    if details.no_charge_reason is not None:
        text += f", without charge: {details.no_charge_reason}"
    yield TimelineEvent(session.end_time, "ended", text)


def _payment(details: SessionDetails) -> Iterator[TimelineEvent]:
    session = details.session
    status, cost = session.payment_status, session.cost_pence
    if session.end_time is None or status is None:
        return
    at = details.settled_at
    if status is PaymentStatus.PENDING or cost is None:
        yield TimelineEvent(None, "payment", "payment pending: the charge is being retried")
    elif status is PaymentStatus.SUCCEEDED:
        yield TimelineEvent(at, "payment", _taken(details, cost))
    elif status is PaymentStatus.NOT_CHARGED:
        released = ""
        if session.hold_pence is not None:
            released = f"; the {_money(session.hold_pence, details)} hold released"
        yield TimelineEvent(at, "payment", f"not charged ({_money(cost, details)}){released}")
    else:
        error = session.payment_error or status.value
        yield TimelineEvent(at, "payment", f"{_money(cost, details)} owed: {error}")


def _taken(details: SessionDetails, cost: int) -> str:
    session = details.session
    intent = session.payment_intent_id or session.hold_payment_intent_id
    held, captured = session.hold_pence, session.captured_pence
    if held is None or captured is None:
        return f"{_money(cost, details)} charged ({intent})"
    released = session.released_pence or 0
    text = f"{_money(captured, details)} captured of the {_money(held, details)} hold"
    if released:
        text += f", {_money(released, details)} released"
    if cost > captured:
        text += f", {_money(cost - captured, details)} charged off-session ({intent})"
    return text


# What a refund's state at Stripe means.
REFUND_STATES = {
    "requested": "requested, Stripe's answer not recorded yet",
    "pending": "pending at Stripe",
    "succeeded": "succeeded",
    "failed": "failed at Stripe",
    "canceled": "canceled at Stripe",
}


def _refund(refund: SessionRefund, details: SessionDetails) -> TimelineEvent:
    by = "by the operator (CLI or console)" if refund.by_operator else "in Stripe's dashboard"
    state = REFUND_STATES.get(refund.state, refund.state)
    text = f"refund of {_money(refund.amount_pence, details)} {by}, {state}"
    if refund.stripe_refund_id:
        text += f" ({refund.stripe_refund_id})"
    if refund.by_operator and refund.reason:
        text += f": {refund.reason}"
    return TimelineEvent(refund.created_at, "refund", text)


def _dispute(details: SessionDetails) -> Iterator[TimelineEvent]:
    if details.disputed_at is None:
        return
    yield TimelineEvent(
        details.disputed_at,
        "dispute",
        f"disputed by the customer with their bank ({details.dispute_id}): answer it in "
        "Stripe's dashboard",
    )


def _email(email: SessionEmail) -> TimelineEvent:
    name = EMAIL_NAMES.get(email.kind, email.kind.replace("_", " "))
    if email.sent_at is not None:
        return TimelineEvent(email.sent_at, "email", f"e-mail sent: {name} to {email.recipient}")
    if email.dead_at is not None:
        return TimelineEvent(
            email.dead_at,
            "email",
            f"e-mail given up: {name} to {email.recipient} ({email.last_error})",
        )
    tried = ""
    if email.last_error is not None:
        attempts = f"{email.attempts} attempt{'' if email.attempts == 1 else 's'}"
        tried = f", {attempts}: {email.last_error}"
    return TimelineEvent(
        email.queued_at, "email", f"e-mail waiting: {name} to {email.recipient}{tried}"
    )
