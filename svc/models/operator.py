"""What the operator's views read: a session with the facts only they need, its e-mails,
its refunds, and the money by day."""

from dataclasses import dataclass
from datetime import date, datetime

from svc.models.records import SessionRecord


@dataclass(frozen=True, slots=True)
class SessionDetails:
    """A session, when its lock said it had the code and its payment reached its outcome,
    and why the operator ended it without charge (None: charged as usual)."""

    session: SessionRecord
    code_set_at: datetime | None
    settled_at: datetime | None
    no_charge_reason: str | None
    refunded_pence: int = 0
    """Refunded or being refunded at Stripe (pending or succeeded)."""
    disputed_at: datetime | None = None
    dispute_id: str | None = None
    reminded_at: datetime | None = None
    """When the overstay reminder was queued."""
    backup_access_code_id: str | None = None
    backup_code_at: datetime | None = None
    """When the backup code was handed out (its e-mails queued); None: none, or not known."""
    first_unlocked_at: datetime | None = None
    unlock_count: int = 0


@dataclass(frozen=True, slots=True)
class SessionRefund:
    """One refund of a session: by the operator (CLI or console) or made in Stripe's
    dashboard, and its state at Stripe (requested: not answered yet)."""

    amount_pence: int
    state: str
    reason: str | None
    by_operator: bool
    stripe_refund_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SessionEmail:
    """An e-mail queued about a session, and what became of it."""

    kind: str
    recipient: str
    queued_at: datetime
    sent_at: datetime | None
    dead_at: datetime | None
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class DayOfMoney:
    """The sessions started on one day (in the pods' time zone) and their money."""

    day: date
    sessions: int
    seconds: int
    taken_pence: int
    """Charged off-session or captured from a hold."""
    owed_pence: int
    """Declined, or awaiting the customer's authentication."""
    refunded_pence: int = 0
    """Refunded that day (of sessions of any day)."""
