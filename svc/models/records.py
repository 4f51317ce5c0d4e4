"""What the data layer returns and takes: plain, immutable records."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from svc.types import PaymentStatus, SessionState, StartOutcomeKind


@dataclass(frozen=True, slots=True)
class Pod:
    id: int
    name: str
    address: str
    price: Decimal
    currency: str
    in_use: bool
    seam_device_id: str | None
    disabled_reason: str | None = None
    """Why the operator took the pod out of service (`pods disable`); None: they did not."""
    lock_online: bool | None = None
    """Seam's latest word on the pod's lock; None: not known yet."""
    lock_battery_level: Decimal | None = None
    """The lock's battery, 0 to 1, when Seam said; None: not known."""
    lock_battery_low: bool = False

    @property
    def out_of_service(self) -> str | None:
        """Why the pod cannot be booked now, in words; None: nothing stops a booking."""
        if self.disabled_reason is not None:
            return self.disabled_reason
        if self.seam_device_id is not None and self.lock_online is False:
            return "its door lock is offline"
        return None


@dataclass(frozen=True, slots=True)
class NewPod:
    name: str
    address: str
    price: Decimal
    currency: str
    seam_device_id: str | None = None


@dataclass(frozen=True, slots=True)
class PodChanges:
    """Only the fields that are not None change; `clear_seam_device_id` removes the lock."""

    address: str | None = None
    price: Decimal | None = None
    currency: str | None = None
    seam_device_id: str | None = None
    clear_seam_device_id: bool = False


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session with what the API and the e-mails need of its pod, and the database's clock."""

    id: UUID
    pod_id: int
    pod_name: str
    pod_address: str
    seam_device_id: str | None
    user_email: str | None
    start_time: datetime
    end_time: datetime | None
    price_per_minute: Decimal
    free_minutes: int
    """Free at the start of the session, as offered when it was booked."""
    currency: str
    stripe_customer_id: str
    stripe_payment_method: str | None
    setup_intent_id: str
    access_code: str
    access_code_id: str | None
    access_code_status: str | None
    cost_pence: int | None
    payment_intent_id: str | None
    payment_status: PaymentStatus | None
    payment_error: str | None
    now: datetime
    hold_payment_intent_id: str | None = None
    hold_pence: int | None = None
    captured_pence: int | None = None
    released_pence: int | None = None

    @property
    def state(self) -> SessionState:
        if self.end_time is None:
            return SessionState.OPEN
        if self.payment_status in (None, PaymentStatus.PENDING):
            return SessionState.ENDED_UNSETTLED
        return SessionState.SETTLED


REQUEST_ID_KEY = "request_id"
"""In a queued message's payload: the id of the request that queued it, if one did."""


@dataclass(frozen=True, slots=True)
class QueuedEmail:
    """A message to queue in the outbox; `dedupe_key` makes queueing it twice a no-op."""

    dedupe_key: str
    kind: str
    recipient: str
    payload: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "dedupe_key": self.dedupe_key,
            "kind": self.kind,
            "recipient": self.recipient,
            "payload": self.payload,
        }


@dataclass(frozen=True, slots=True)
class OutboxEmail:
    id: int
    dedupe_key: str
    kind: str
    recipient: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class StartSessionRequest:
    event_id: str | None
    event_type: str | None
    session_id: UUID
    setup_intent_id: str
    pod_id: int
    user_email: str | None
    customer_id: str
    payment_method: str | None
    access_code: str
    free_minutes: int
    started_email: QueuedEmail | None
    unavailable_email: QueuedEmail | None


@dataclass(frozen=True, slots=True)
class StartOutcome:
    outcome: StartOutcomeKind
    session_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class ChargeClaim:
    """An ended session's cost as fixed (by this caller or an earlier one), and whether
    this caller holds the charge lease."""

    cost_pence: int
    claimed: bool


@dataclass(frozen=True, slots=True)
class EndedSession:
    """A session as its end left it, and whether this caller holds its charge lease."""

    session: SessionRecord
    charge_claimed: bool


@dataclass(frozen=True, slots=True)
class CardHold:
    """The hold of a SetupIntent as the database knows it (qwip_begin_hold's answer)."""

    setup_intent_id: str
    session_id: UUID
    amount_pence: int
    currency: str
    payment_intent_id: str | None
    state: str
    error: str | None = None
    pod_id: int | None = None


@dataclass(frozen=True, slots=True)
class BackupCode:
    """A code from the lock's backup pool, handed to a session whose own code did not set."""

    access_code_id: str
    code: str


@dataclass(frozen=True, slots=True)
class RecoveryAttempt:
    """An owed session's current payment attempt on the pay page, and its PaymentIntent
    once made (qwip_begin_recovery's answer)."""

    attempt: int
    payment_intent_id: str | None


@dataclass(frozen=True, slots=True)
class SessionUnlocks:
    """What the lock reported the session's code opened (Seam's `lock.unlocked`)."""

    first_unlocked_at: datetime | None = None
    unlock_count: int = 0


@dataclass(frozen=True, slots=True)
class LockHealth:
    """What Seam says of a lock; None: this report says nothing of it."""

    device_id: str
    occurred_at: datetime
    online: bool | None = None
    battery_level: Decimal | None = None
    battery_low: bool | None = None
    tampered: bool = False


@dataclass(frozen=True, slots=True)
class ServiceGauges:
    """What the database holds now, for the metrics: read in one query at each scrape."""

    open_sessions: int
    owed_pence: int
    emails_waiting: int
    emails_dead: int
