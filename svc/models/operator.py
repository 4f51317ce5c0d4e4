"""What the operator's views read: a session with the facts only they need, its e-mails,
and the money by day."""

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
